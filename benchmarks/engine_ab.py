"""Engine A/B on a busy machine: CPU time per call of one engine tree, for side-by-side runs.

    python -m benchmarks.engine_ab [ENGINE_SRC]

ENGINE_SRC is a directory holding a ``proctor/engine`` package (a copy of
``engine/src`` from another commit); without it, the installed engine is used.
Run it alternately for the two trees, a few times each, and compare:

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do python -m benchmarks.engine_ab /tmp/before/engine/src;
                       python -m benchmarks.engine_ab engine/src; done

For 100 and 10,000 generated rules (engine_bench's generator), over 5,000
distinct requests: evaluate, evaluate with explain, and Request construction,
each the best of 15 passes in nanoseconds per call. Time is the thread's CPU
time, not wall time, so other processes on a shared machine blur it far less
than they blur engine_bench's latencies.
"""

from __future__ import annotations

import gc
import json
import sys
import time

PASSES = 15


def main(argv: list[str]) -> int:
    if argv:
        sys.path.insert(0, argv[0])
    from benchmarks import engine_bench
    from proctor import engine

    out: dict[str, object] = {"engine": engine.__file__}
    for size in (100, 10_000):
        policy = engine.compile_policy(engine_bench.generate_policy(size))
        patterns = [p for rule in policy.rules for p in rule.match.topics]
        args = engine_bench.request_args(patterns, 5000, seed=7)
        requests = [engine.Request(**a) for a in args]
        evaluate = policy.evaluate
        best = {"evaluate_ns": 1e12, "explain_ns": 1e12, "request_ns": 1e12}
        gc.disable()
        try:
            for _ in range(PASSES):
                t = time.thread_time_ns()
                for r in requests:
                    evaluate(r)
                best["evaluate_ns"] = min(best["evaluate_ns"], time.thread_time_ns() - t)
                t = time.thread_time_ns()
                for r in requests:
                    evaluate(r, True)
                best["explain_ns"] = min(best["explain_ns"], time.thread_time_ns() - t)
                t = time.thread_time_ns()
                for a in args:
                    engine.Request(**a)
                best["request_ns"] = min(best["request_ns"], time.thread_time_ns() - t)
        finally:
            gc.enable()
        out[str(size)] = {k: round(v / len(args)) for k, v in best.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
