"""Proctor's Evaluate against a bare grpc.aio echo floor, measured side by side.

Starts `proctor serve` (seed policy, default settings) and the echo server of
benchmarks/echo_server.py, answering with a reply of the same size as a real
EvaluateResponse: --instances pairs of them, pair k on PYTHONHASHSEED=k+1, the
rounds below rotating through the pairs (identical Python servers differ by up
to ~8% per process; a pair shares its seed, and no side keeps a lucky process).
Both are driven the same way, on pre-serialized request bytes, so the
difference is the server's work alone:

1. sequential latency: alternating short rounds of N calls to each (the order
   flips every round), so machine drift hits both alike; p50/p99 and ratios;
2. throughput with 64 calls in flight on one worker, load from --procs
   processes, alternating rounds; ratio to the floor;
3. scaling: --workers 2 (with a private redis-server, which --workers needs)
   against one worker, same load.

With --baseline-python another tree's interpreter (its venv's python) serves a
third server, "baseline", measured in the same alternating rounds: a change
against the tree before it, in one run (the native-code figures in
docs/performance.md were taken this way).

    python benchmarks/service_bench.py [--quick] [--out PATH]
    python benchmarks/service_bench.py --no-scaling --baseline-python /other/tree/.venv/bin/python

Results go to --out, or to the results directory outside the checkout
(benchmarks/baselines/README.md), as JSON with the machine, commit and settings.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from proctor.bench.results import git_commit, machine, save_result
from proctor.bench.spawn import free_port
from proctor.v1 import decisions_pb2

ROOT = Path(__file__).resolve().parent.parent
EVALUATE = "/proctor.v1.Decisions/Evaluate"
ECHO = "/bench.Echo/Echo"

# One request per decision path of the seed policy: the paths cost differently
# (require_approval creates an approval and writes two audit events).
_SEED_CALL = {
    "request_id": "",
    "run_id": "run-7f3a",
    "tenant": "acme",
    "delegation_path": ["orchestrator", "research-agent", "mailer"],
    "labels": {"env": "prod"},
}
REQUESTS = {
    "allow": decisions_pb2.EvaluateRequest(
        topic="job.42.delegate.internal", risk_tags=[], **_SEED_CALL),
    "deny": decisions_pb2.EvaluateRequest(
        topic="job.42.export.bulk", risk_tags=["bulk-data"], **_SEED_CALL),
    "require_approval": decisions_pb2.EvaluateRequest(
        topic="job.42.send.email", risk_tags=["external", "customer-data"], **_SEED_CALL),
}


# -- processes ------------------------------------------------------------------------




def wait_ready(address: str, method: str, payload: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(method)
        while time.monotonic() < deadline:
            try:
                call(payload, timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.05)
    raise TimeoutError(f"{address} not answering {method}")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="proctor-bench-"))

    def start(self, args: list[str], name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=self.tmp,
                                env=None if env is None else {**os.environ, **env})
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


def proctor_cmd(policy: Path, address: str, extra: list[str], python: str = "") -> list[str]:
    exe = Path(python or sys.executable).parent / "proctor"
    base = [str(exe)] if exe.exists() else [python or sys.executable, "-m", "proctor.server"]
    return [*base, "serve", "--policy", str(policy), "--listen", address, "--log-level",
            "warning", *extra]


# -- measurements ----------------------------------------------------------------------


def sequential(address: str, method: str, payload: bytes, n: int) -> list[float]:
    """n calls one after another on one channel; latencies in microseconds."""
    out = []
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(method)
        for _ in range(20):
            call(payload, timeout=5)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            call(payload, timeout=5)
            out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def _closed_loop(
    address: str, method: str, payload: bytes, inflight: int, duration: float, channels: int
) -> tuple[int, float]:
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.aio.insecure_channel(address, options=opts) for _ in range(channels)]
    calls = [c.unary_unary(method) for c in chans]
    count = 0
    measuring = False
    warm_end = time.monotonic() + 0.3
    end = warm_end + duration

    async def worker(i: int) -> None:
        nonlocal count
        call = calls[i % len(calls)]
        while True:
            now = time.monotonic()
            if now >= end:
                return
            await call(payload, timeout=10)
            if measuring:
                count += 1

    async def clock() -> float:
        nonlocal measuring
        await asyncio.sleep(max(0.0, warm_end - time.monotonic()))
        measuring = True
        t0 = time.monotonic()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        measuring = False
        return time.monotonic() - t0

    results = await asyncio.gather(clock(), *[worker(i) for i in range(inflight)])
    for c in chans:
        await c.close()
    return count, float(results[0])


def load_task(args: tuple[str, str, bytes, int, float, int]) -> tuple[int, float]:
    """Runs in a load process: one closed loop; returns (calls, seconds)."""
    return asyncio.run(_closed_loop(*args))


def throughput(
    pool: concurrent.futures.Executor, procs: int, address: str, method: str,
    payload: bytes, inflight: int, duration: float,
) -> float:
    per = max(1, inflight // procs)
    jobs = [(address, method, payload, per, duration, 4)] * procs
    results = list(pool.map(load_task, jobs))
    return sum(c for c, _ in results) / statistics.mean(s for _, s in results)


# -- the run ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    procs = Procs()
    payload = REQUESTS[args.decision].SerializeToString()
    report: dict[str, Any] = {
        "benchmark": "service_bench",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "note": "shared 2-core machine; noise ~ +-10%",
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "request_bytes": len(payload),
    }
    try:
        pairs, baselines, reply = _start_servers(procs, args, payload)
        report["response_bytes"] = len(reply)
        report["instances"] = args.instances

        # 1. sequential latency, alternating rounds.
        seq = _sequential_rounds(args, pairs, baselines, payload)
        report["sequential"] = seq
        print(json.dumps({"sequential": seq}, indent=1), flush=True)

        # 2. throughput with N in flight, one worker, alternating rounds.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(args.scaling_procs, mp_context=ctx) as pool:
            tput = _throughput_rounds(pool, args, pairs, baselines, payload)
            report["throughput_one_worker"] = tput
            print(json.dumps({"throughput_one_worker": tput}, indent=1), flush=True)

            # 3. scaling: two workers against one, the load from more processes.
            if not args.no_scaling and shutil.which("redis-server"):
                report["scaling"] = scaling(procs, pool, args, payload, pairs[0][0])
                print(json.dumps({"scaling": report["scaling"]}, indent=1), flush=True)
    finally:
        procs.close()

    print(f"wrote {save_result(report, args.out, f'service-{args.decision}')}")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate vs a bare echo floor")
    parser.add_argument("--policy", default=str(ROOT / "examples" / "safety.yaml"))
    parser.add_argument("--rounds", type=int, default=20, help="sequential rounds")
    parser.add_argument("--calls", type=int, default=250, help="calls per sequential round")
    parser.add_argument("--tp-rounds", type=int, default=6, help="throughput rounds")
    parser.add_argument("--instances", type=int, default=3,
                        help="server pairs, each on its own hash seed, rotated per round")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per tp round")
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--scaling-procs", type=int, default=4)
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra flag for proctor serve (repeatable)")
    parser.add_argument("--decision", choices=sorted(REQUESTS), default="allow",
                        help="which seed decision path every call takes")
    parser.add_argument("--baseline-python", default="",
                        help="another tree's python: its Proctor is measured in the same rounds")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.tp_rounds, args.duration = 4, 100, 1, 1.0
        args.instances = 1
    return args


def _start_servers(procs: Procs, args: argparse.Namespace, payload: bytes,
                   ) -> tuple[list[tuple[str, str]], list[str], bytes]:
    """Start the (Proctor, echo) pairs and the baselines; return them and Proctor's reply.

    --instances pairs of servers (Proctor and echo), pair k on PYTHONHASHSEED=k+1:
    identical Python servers differ in speed by up to ~8% per process (the hash seed
    and the memory layout it leads to), so each round compares one pair on one seed,
    and the rounds rotate the pairs. Start order alternates too.
    """
    pairs: list[tuple[str, str]] = []
    baselines: list[str] = []
    reply = b""
    for k in range(args.instances):
        env = {"PYTHONHASHSEED": str(k + 1)}
        proctor_addr, echo_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        starts = [("proctor", proctor_addr), ("echo", echo_addr)]
        if args.baseline_python:
            baselines.append(f"127.0.0.1:{free_port()}")
            starts.append(("baseline", baselines[-1]))
        for name, addr in (starts if k % 2 == 0 else starts[::-1]):
            if name in ("proctor", "baseline"):
                python = args.baseline_python if name == "baseline" else ""
                procs.start(proctor_cmd(
                    Path(args.policy), addr,
                    ["--audit-dir", str(procs.tmp / f"audit-{name}-{k}"), *args.serve_arg],
                    python), f"{name}-{k}", env)
                wait_ready(addr, EVALUATE, payload)
                with grpc.insecure_channel(addr) as ch:
                    reply = ch.unary_unary(EVALUATE)(payload, timeout=5)
            else:
                # the echo's reply has the size of Proctor's (known from pair 0,
                # whose proctor starts first; every pair answers the request alike)
                procs.start(
                    [sys.executable, str(ROOT / "benchmarks" / "echo_server.py"),
                     "--listen", addr, "--response-bytes", str(len(reply))],
                    f"echo-{k}", env)
                wait_ready(addr, ECHO, payload)
        pairs.append((proctor_addr, echo_addr))
    return pairs, baselines, reply


def _sequential_rounds(args: argparse.Namespace, pairs: list[tuple[str, str]],
                       baselines: list[str], payload: bytes) -> dict[str, Any]:
    """One call at a time, alternating rounds: percentiles per server and their ratios."""
    lat: dict[str, list[float]] = {"echo": [], "proctor": []}
    if baselines:
        lat["baseline"] = []
    for r in range(args.rounds):
        order = _round_order(pairs, baselines, r)
        for name, addr, method in order:
            lat[name].extend(sequential(addr, method, payload, args.calls))
    seq: dict[str, Any] = {
        name: {
            "p50_us": round(percentile(v, 50), 1),
            "p90_us": round(percentile(v, 90), 1),
            "p99_us": round(percentile(v, 99), 1),
            "max_us": round(max(v), 1),
            "samples": len(v),
        }
        for name, v in lat.items()
    }
    seq["ratio"] = {
        "p50": round(seq["proctor"]["p50_us"] / seq["echo"]["p50_us"], 3),
        "p99": round(seq["proctor"]["p99_us"] / seq["echo"]["p99_us"], 3),
    }
    if baselines:
        seq["ratio_to_baseline"] = {
            "p50": round(seq["proctor"]["p50_us"] / seq["baseline"]["p50_us"], 3),
            "p99": round(seq["proctor"]["p99_us"] / seq["baseline"]["p99_us"], 3),
        }
    return seq


def _throughput_rounds(pool: concurrent.futures.ProcessPoolExecutor, args: argparse.Namespace,
                       pairs: list[tuple[str, str]], baselines: list[str],
                       payload: bytes) -> dict[str, Any]:
    """--inflight calls in flight against one worker, alternating rounds: medians, ratios."""
    names = ["echo", "proctor", *(["baseline"] if baselines else [])]
    tp: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.tp_rounds):
        for name, addr, method in _round_order(pairs, baselines, r):
            tp[name].append(throughput(pool, args.procs, addr, method, payload,
                                       args.inflight, args.duration))
    tput: dict[str, Any] = {
        name: {"calls_per_s": round(statistics.median(v)), "rounds": [round(x) for x in v]}
        for name, v in tp.items()
    }
    tput["ratio"] = round(tput["proctor"]["calls_per_s"] / tput["echo"]["calls_per_s"], 3)
    if baselines:
        tput["ratio_to_baseline"] = round(
            tput["proctor"]["calls_per_s"] / tput["baseline"]["calls_per_s"], 3)
    tput["inflight"] = args.inflight
    tput["load_procs"] = args.procs
    return tput


def _round_order(pairs: list[tuple[str, str]], baselines: list[str],
                 r: int) -> list[tuple[str, str, str]]:
    """Round r's servers (name, address, method): pair r's, its baseline too; the order
    turns every round, so drift on the machine hits each side alike."""
    proctor_addr, echo_addr = pairs[r % len(pairs)]
    order = [("echo", echo_addr, ECHO), ("proctor", proctor_addr, EVALUATE)]
    if baselines:
        order.append(("baseline", baselines[r % len(baselines)], EVALUATE))
    shift = r % len(order)
    order = order[shift:] + order[:shift]
    return order[::-1] if (r // len(order)) % 2 else order


def scaling(
    procs: Procs, pool: concurrent.futures.Executor, args: argparse.Namespace, payload: bytes,
    one_addr: str,
) -> dict[str, Any]:
    redis_port = free_port()
    procs.start(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(procs.tmp)],
        "redis",
    )
    two_addr = f"127.0.0.1:{free_port()}"
    procs.start(
        proctor_cmd(Path(args.policy), two_addr,
                    ["--workers", "2", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                     "--redis-allow-volatile", "--audit-dir", str(procs.tmp / "audit2"),
                     *args.serve_arg]),
        "proctor2",
    )
    wait_ready(two_addr, EVALUATE, payload)
    time.sleep(1.0)  # let the second worker come up too
    tp: dict[str, list[float]] = {"one_worker": [], "two_workers": []}
    for r in range(args.tp_rounds):
        order = [("one_worker", one_addr), ("two_workers", two_addr)]
        if r % 2:
            order.reverse()
        for name, addr in order:
            tp[name].append(throughput(pool, args.scaling_procs, addr, EVALUATE, payload,
                                       args.inflight, args.duration))
    out: dict[str, Any] = {
        name: {"calls_per_s": round(statistics.median(v)), "rounds": [round(x) for x in v]}
        for name, v in tp.items()
    }
    out["speedup"] = round(out["two_workers"]["calls_per_s"] / out["one_worker"]["calls_per_s"], 3)
    out["load_procs"] = args.scaling_procs
    out["inflight"] = args.inflight
    return out


if __name__ == "__main__":
    sys.exit(main())
