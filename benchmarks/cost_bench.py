"""Instructions per call: Proctor's Evaluate against the bare echo floor, under cachegrind.

Wall-clock ratios on a shared 2-core machine move by +-10% with whatever else
runs; instruction counts do not. This runs each server under
`valgrind --tool=cachegrind` twice, once serving a short run of calls and once
a long one (both with the same number in flight), and divides the difference
in instructions by the difference in calls: the cost of one call, start-up
excluded, with the simulated I1/D1 cache misses beside it.

Valgrind slows the servers ~50x, so the audit writer's linger is stretched
(--linger, default 1 s) to keep its batches as large as at full speed;
otherwise every event would pay a whole batch's fixed cost.

    python benchmarks/cost_bench.py [--calls 2000] [--inflight 16] [--decision allow]
        [--serve-arg=--audit-dir=...] [--out PATH]

Needs valgrind (Debian package `valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.service_bench import ECHO, EVALUATE, REQUESTS  # noqa: E402
from proctor.bench.results import git_commit, machine, save_result  # noqa: E402
from proctor.bench.spawn import free_port  # noqa: E402

_EVENTS = {"Ir": "I   refs", "I1mr": "I1  misses", "D1mr": "D1  misses"}

# Runs `proctor serve` with the audit linger stretched (see the module docstring), or
# with the audit swapped for NullAudit (argv[2] "off") to split the audit's share out.
_LAUNCH = (
    "import sys\n"
    "import proctor.server.audit.writer as w\n"
    "import proctor.server.audit.log as log\n"
    "import proctor.server.main\n"
    "w.DEFAULT_LINGER = float(sys.argv[1])\n"
    "if sys.argv[2] == 'off':\n"
    "    proctor.server.main.build_audit = lambda settings, **kw: log.NullAudit()\n"
    "from proctor.server.cli import main\n"
    "sys.exit(main(['serve', *sys.argv[3:]]))\n"
)


async def _drive(address: str, method: str, payload: bytes, calls: int, inflight: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call(payload, timeout=120)

        await asyncio.gather(*[worker() for _ in range(inflight)])


def _wait_answering(address: str, method: str, payload: bytes, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method)
        while True:
            try:
                call(payload, timeout=10)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _counts(log: str) -> dict[str, int]:
    out = {}
    for key, label in _EVENTS.items():
        m = re.search(rf"{re.escape(label)}:\s+([\d,]+)", log)
        if not m:
            raise RuntimeError(f"no '{label}' in the cachegrind summary:\n{log[-2000:]}")
        out[key] = int(m.group(1).replace(",", ""))
    return out


def measure(name: str, argv: list[str], method: str, payload: bytes, calls: int,
            inflight: int, work: Path) -> dict[str, int]:
    """Cachegrind totals of one server process that answered `calls` calls, then stopped."""
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    log = work / f"{name}-{calls}.log"
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes",
           f"--cachegrind-out-file={work / f'{name}-{calls}.out'}", *argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work)
    try:
        address = f"127.0.0.1:{port}"
        _wait_answering(address, method, payload)
        asyncio.run(_drive(address, method, payload, calls, inflight))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return _counts(log.read_text(errors="replace"))


def per_call(name: str, argv: list[str], method: str, payload: bytes, args: argparse.Namespace,
             work: Path) -> dict[str, float]:
    short = measure(name, argv, method, payload, args.short_calls, args.inflight, work)
    long = measure(name, argv, method, payload, args.short_calls + args.calls, args.inflight,
                   work)
    return {k: round((long[k] - short[k]) / args.calls) for k in _EVENTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="instructions per call vs the echo floor")
    parser.add_argument("--policy", default=str(ROOT / "examples" / "safety.yaml"))
    parser.add_argument("--calls", type=int, default=2000, help="calls counted (long - short)")
    parser.add_argument("--short-calls", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--linger", type=float, default=1.0, help="audit linger under valgrind")
    parser.add_argument("--decision", choices=sorted(REQUESTS), default="allow")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--audit-off", action="store_true",
                        help="also measure Proctor with the audit off (its share of the cost)")
    parser.add_argument("--keep", default="", help="keep the cachegrind files in this directory "
                        "(then: cg_diff NAME-SHORT.out NAME-LONG.out | cg_annotate /dev/stdin)")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        print("cost_bench needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2

    payload = REQUESTS[args.decision].SerializeToString()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="proctor-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    env_python = sys.executable
    try:
        launch = work / "launch.py"
        launch.write_text(_LAUNCH)
        serve = ["--policy", args.policy, "--listen", "127.0.0.1:{port}", "--log-level",
                 "warning", "--audit-dir", str(work / "audit"), *args.serve_arg]
        proctor = [env_python, str(launch), str(args.linger), "on", *serve]
        # The echo floor answers with a reply of the real answer's size.
        echo = [env_python, str(ROOT / "benchmarks" / "echo_server.py"),
                "--listen", "127.0.0.1:{port}", "--response-bytes", str(_reply_size(args, payload))]
        result = {
            "echo": per_call("echo", echo, ECHO, payload, args, work),
            "proctor": per_call("proctor", proctor, EVALUATE, payload, args, work),
        }
        if args.audit_off:
            result["proctor_audit_off"] = per_call(
                "proctor-audit-off", [env_python, str(launch), str(args.linger), "off", *serve],
                EVALUATE, payload, args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["ratio"] = {k: round(result["proctor"][k] / result["echo"][k], 3) for k in _EVENTS}
    if "proctor_audit_off" in result:
        result["ratio_audit_off"] = {
            k: round(result["proctor_audit_off"][k] / result["echo"][k], 3) for k in _EVENTS}
    report: dict[str, Any] = {
        "benchmark": "cost_bench",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "per_call": result,
    }
    print(json.dumps(report["per_call"], indent=1))
    print(f"wrote {save_result(report, args.out, f'cost-{args.decision}')}")
    return 0


def _reply_size(args: argparse.Namespace, payload: bytes) -> int:
    """The size of Proctor's real answer to this request (an in-process evaluation)."""
    from proctor import engine
    from proctor.server.decisions import DECISION_TO_PROTO, to_engine_request
    from proctor.v1 import decisions_pb2

    policy = engine.load_policy(args.policy)
    request = decisions_pb2.EvaluateRequest.FromString(payload)
    decision = policy.evaluate(to_engine_request(request))
    reply = decisions_pb2.EvaluateResponse(
        decision=DECISION_TO_PROTO[decision.decision], rule_id=decision.rule_id,
        reason=decision.reason, policy_version=decision.policy_version,
        decision_id="0" * 26,
        approval_id="0" * 26 if decision.decision == "require_approval" else "",
    )
    return len(reply.SerializeToString())


if __name__ == "__main__":
    sys.exit(main())
