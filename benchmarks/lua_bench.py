"""What each budget operation, and each audit event, costs inside Redis.

Redis runs every script of every replica of a fleet on its one thread, so the
microseconds a script spends inside Redis bound the fleet's reservations per
second however many Proctor servers there are. This starts a private
redis-server and, for each source tree (this one, and --baseline DIR if given:
a tree holding server/ and engine/, e.g. an earlier commit), a worker process
that drives that tree's RedisBudgetStore on a fleet of its own: reserve (a new
id), reserve again (a retry of an id seen before), commit, release, get. Per
round, per tree and operation: CONFIG RESETSTAT, --calls operations, then
EVALSHA's usec_per_call from INFO commandstats (Redis's own clock around the
script). "append" is the Redis audit sink writing batches of APPEND_BATCH events
(one append.lua call each) to a stream: its figure is EVALSHA's time per event, and
"append-cpu" Redis's whole CPU time per event (INFO cpu, user + sys: protocol
parsing included, which the script's own clock leaves out). Rounds alternate the
trees' order; medians over the rounds are reported, and the ratio to the baseline.

    python benchmarks/lua_bench.py [--rounds 30] [--calls 300] [--baseline DIR]

Results: JSON to --out, or lua-TIME.json in the results directory outside the
checkout (benchmarks/baselines/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPS = ("reserve", "retry", "commit", "release", "get", "append")
APPEND_BATCH = 64  # events a batch: one append.lua call, as RedisSink's XADD_CHUNK
POLICY = """\
version: v1
rules:
  - {id: allow-all, match: {topics: ["**"]}, decision: allow, reason: bench}
budgets:
  - {id: fleet-tokens, unit: tokens, limit: 1000000000000, window: day, scope: fleet}
  - {id: tenant-tokens, unit: tokens, limit: 1000000000000, window: hour, scope: tenant}
"""


def worker(redis_url: str) -> None:
    """One tree's store (imported from sys.path[0]); runs one operation kind per line of
    stdin ("OP N") and answers "done" when the N calls are over. "prep N" reserves the
    ids that "release N" will release, before the statistics are reset."""
    from proctor import engine
    from proctor.server.audit.redis_sink import RedisSink
    from proctor.server.audit.sink import Sealed
    from proctor.server.budgets.redis_store import RedisBudgetStore

    budgets = engine.compile_policy(POLICY).budgets
    writer = f"lua-bench-{uuid.uuid4().hex[:8]}"
    sink = RedisSink(redis_url, f"{writer}:audit", tempfile.mkdtemp(prefix="lua-bench-spool-"))
    appended = [0]

    async def append(n: int) -> None:
        """n events, in batches of APPEND_BATCH, shaped like Evaluate's decision events."""
        for first in range(appended[0] + 1, appended[0] + n + 1, APPEND_BATCH):
            seqs = range(first, min(first + APPEND_BATCH, appended[0] + n + 1))
            await sink.write([Sealed(writer, seq, _event_line(writer, seq)) for seq in seqs])
        appended[0] += n

    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_url, fleet=f"lua-bench-{uuid.uuid4().hex[:8]}")
        await store.start()
        held: list[str] = []  # reserved, for retries and commits
        spare: list[str] = []  # reserved by "prep" (not measured), for releases
        seen: list[str] = []

        async def reserve(rid: str) -> None:
            await store.reserve(budgets, rid, "acme", "agent", "run", "tokens", 1, 3600)

        for _ in range(200):  # warm up every script
            rid = uuid.uuid4().hex
            await reserve(rid)
            await reserve(rid)
            await store.commit(rid, 1)
            await store.get(budgets, "acme", "agent", "run")
        await append(APPEND_BATCH * 20)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            op, n = line.split()
            for _ in range(int(n)):
                if op == "reserve":
                    rid = uuid.uuid4().hex
                    await reserve(rid)
                    held.append(rid)
                elif op == "retry":
                    rid = held[len(seen) % len(held)]
                    await reserve(rid)
                    seen.append(rid)
                elif op == "prep":
                    rid = uuid.uuid4().hex
                    await reserve(rid)
                    spare.append(rid)
                elif op == "commit":
                    await store.commit(held.pop(), 1)
                elif op == "release":
                    await store.release(spare.pop())
                elif op == "append":
                    await append(int(n))
                    break
                else:
                    await store.get(budgets, "acme", "agent", "run")
            print("done", flush=True)
        await store.close()
        sink.close()

    asyncio.run(main())


def _event_line(writer: str, seq: int) -> bytes:
    """A stored decision event's line: the size and shape of the real ones (~700 bytes)."""
    digest = uuid.uuid5(uuid.NAMESPACE_OID, f"{writer}:{seq}").hex * 2
    return (
        '{"agent_id":"etl-7","decision":"require_approval",'
        f'"decision_id":"01KBX4Z3M6Q{seq:015d}",'
        '"delegation_path":["planner","researcher","etl-7"],"derived_tags":["external"],'
        f'"event_id":"01KBX4Z3M6R{seq:015d}","hash":"{digest}","kind":"decision",'
        '"labels":{"env":"prod"},"latency_us":182,"policy_version":"2026.11.22-1",'
        f'"prev_hash":"{digest}","reason":"Customer data access requires review",'
        f'"request_id":"req-{seq}","risk_tags":["pii"],"rule_id":"approve-data-access",'
        f'"run_id":"run-42","seq":{seq},"tenant":"acme","time":"2026-12-06T10:00:00.123456Z",'
        f'"topic":"job.acme.read.customer-data","writer":"{writer}"}}\n').encode()


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        sys.path.insert(0, sys.argv[3])
        worker(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--baseline", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import redis

    from proctor.bench.results import git_commit, save_result
    from proctor.bench.spawn import free_port, wait_port

    work = Path(tempfile.mkdtemp(prefix="lua-bench-"))
    port = free_port()
    rproc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", str(work)],
        stdout=subprocess.DEVNULL)
    trees = {"this": ROOT} | ({"baseline": Path(args.baseline).resolve()} if args.baseline
                              else {})
    workers: dict[str, subprocess.Popen[str]] = {}
    try:
        wait_port(port)
        url = f"redis://127.0.0.1:{port}/0"
        r = redis.Redis(port=port)
        for name, tree in trees.items():
            workers[name] = subprocess.Popen(
                [sys.executable, __file__, "--worker", url, str(tree)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(tree)))
        us = _rounds(args, r, workers)
        r.close()
        medians = {t: {op: statistics.median(v) for op, v in ops.items()}
                   for t, ops in us.items()}
        ratios = ({op: medians["this"][op] / medians["baseline"][op] for op in medians["this"]}
                  if args.baseline else {})
        result = {
            "benchmark": "lua_bench",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "redis": redis_version()},
            "settings": vars(args),
            "usec_per_call_median": medians,
            "ratio_to_baseline": ratios,
            "rounds": us,
        }
        out = save_result(result, args.out, "lua")
        print(json.dumps({"usec_per_call_median": medians, "ratio_to_baseline": ratios},
                         indent=2))
        print(f"written to {out}")
        return 0
    finally:
        for w in workers.values():
            if w.stdin is not None:
                w.stdin.close()
            w.wait(10)
        rproc.terminate()
        rproc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _rounds(args: argparse.Namespace, r: Any,
            workers: dict[str, subprocess.Popen[str]]) -> dict[str, dict[str, list[float]]]:
    """Every op from every tree's worker, the order flipping each round: the microseconds
    Redis spent per call (per event for append), from its own command statistics."""
    us: dict[str, dict[str, list[float]]] = {
        t: {op: [] for op in (*OPS, "append-cpu")} for t in workers}
    names = list(workers)
    for rnd in range(args.rounds):
        for name in (names if rnd % 2 == 0 else names[::-1]):
            w = workers[name]
            for op in OPS:
                n = args.calls * (APPEND_BATCH // 4 if op == "append" else 1)
                for line in ([f"prep {args.calls}"] if op == "release" else []) + [
                        f"{op} {n}"]:
                    if line.startswith(op):
                        r.config_resetstat()
                        cpu = _redis_cpu(r)
                    assert w.stdin is not None and w.stdout is not None
                    w.stdin.write(line + "\n")
                    w.stdin.flush()
                    if w.stdout.readline().strip() != "done":
                        raise RuntimeError(f"worker {name} failed on {line}")
                stats = r.info("commandstats")["cmdstat_evalsha"]
                if op == "append":  # per event
                    us[name][op].append(stats["usec"] / n)
                    us[name]["append-cpu"].append((_redis_cpu(r) - cpu) / n * 1e6)
                else:
                    us[name][op].append(stats["usec_per_call"])
    return us


def _redis_cpu(r: object) -> float:
    info = r.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_version() -> str:
    out = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"],
                         capture_output=True, text=True, check=False).stdout
    return out.split("v=")[1].split()[0] if "v=" in out else out.strip()


if __name__ == "__main__":
    sys.exit(main())
