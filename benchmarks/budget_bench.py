"""ReserveBudget over gRPC beside its two floors, measured in the same run.

Starts a private redis-server, `proctor serve --redis-url` on it (a policy with a
fleet and a tenant budget of the same unit, so each reservation touches two
counters), and the bare echo server of benchmarks/echo_server.py answering with
a reply the size of a real ReserveBudgetResponse: --instances sets of them, set k
on PYTHONHASHSEED=k+1, each round driving the next set (identical Python servers
differ by up to ~8% per process; no side keeps a lucky one). Then, in
alternating rounds (the order flips every round, so machine drift hits all
alike):

- `reserve`: ReserveBudget over gRPC, a fresh reservation_id per call;
- `echo`: the gRPC echo floor, same request size;
- `redis`: the raw Redis round trip, EVALSHA of a trivial script;
- `script`: the real reserve.lua through the Redis store (no gRPC), for insight.

Sequential latency (one call at a time) gives p50/p99; throughput runs with
--concurrency calls in flight (grpc.aio) for reserve and echo. The target:
reserve p99 <= echo p99 + 1.5 x redis p99.

With --baseline DIR, a second `proctor serve` runs from another source tree
(e.g. `git worktree add /tmp/base 7a2de49`) on the same Redis, and `baseline`
(its ReserveBudget) joins the same alternating rounds and throughput runs: before
and after, side by side, under the same machine conditions. The tree may have
today's layout (server/src/proctor/server, run as `python -m proctor.server`) or
the one before the namespace move (server/, run as `python -m server`); it runs
on DIR/.venv/bin/python when that exists (its own venv, with its C extensions
built), else on this interpreter with DIR on PYTHONPATH. The target is still
judged on `reserve`.

With --variant NAME:VAR=VALUE[,VAR=VALUE], one more `proctor serve` of this tree
runs with those environment variables, as NAME, in the same rounds (an A/B of a
switch read from the environment).

    python benchmarks/budget_bench.py [--rounds 12] [--calls 300] [--instances 3] [--quick]
                                      [--baseline DIR] [--variant NAME:VAR=VALUE]

Results: JSON with the machine, commit and settings, to --out or to the results
directory outside the checkout (benchmarks/baselines/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proctor.bench.results import git_commit, save_result  # noqa: E402
from proctor.bench.spawn import free_port, wait_port  # noqa: E402
from proctor.server.budgets.redis_store import RedisBudgetStore  # noqa: E402
from proctor.v1 import budgets_pb2  # noqa: E402

RESERVE = "/proctor.v1.Budgets/ReserveBudget"
ECHO = "/bench.Echo/Echo"
POLICY = """\
version: v1
rules:
  - id: allow-all
    match: {topics: ["**"]}
    decision: allow
    reason: "bench"
budgets:
  - {id: fleet-tokens, unit: tokens, limit: 1000000000000, window: day, scope: fleet}
  - {id: tenant-tokens, unit: tokens, limit: 1000000000000, window: hour, scope: tenant}
"""






def request_bytes(i: int) -> bytes:
    return budgets_pb2.ReserveBudgetRequest(
        reservation_id=f"bench-{uuid.uuid4().hex[:12]}-{i:08d}", tenant="acme",
        agent_id="research-agent", run_id="run-7f3a", unit="tokens", amount=1,
        ttl_seconds=60,
    ).SerializeToString()


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def summary(samples: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples]
    return {"n": len(ms), "p50_ms": round(pct(ms, 0.50), 4), "p90_ms": round(pct(ms, 0.90), 4),
            "p99_ms": round(pct(ms, 0.99), 4), "max_ms": round(max(ms), 4),
            "mean_ms": round(statistics.fmean(ms), 4)}


class Procs:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        err = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=self.workdir,
                             start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)


def wait_reserve(address: str, timeout: float = 30.0) -> bytes:
    """The first ReserveBudget answer of a server that is starting (raw bytes)."""
    with grpc.insecure_channel(address) as ch:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply: bytes = ch.unary_unary(RESERVE)(request_bytes(0), timeout=1)
                return reply
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def sequential(args: argparse.Namespace, sets: list[dict[str, str]], redis_port: int
               ) -> dict[str, Any]:
    """Alternating rounds; round r drives server set r % len(sets) (one hash seed)."""
    r = redis.Redis(port=redis_port)
    trivial = r.script_load("return 1")
    servers = [name for name in sets[0] if name != "echo"]  # every ReserveBudget server
    samples: dict[str, list[float]] = {"reserve": [], "echo": [], "redis": [], "script": []}
    samples.update({name: [] for name in servers})
    loop = asyncio.new_event_loop()
    store = RedisBudgetStore.from_url(f"redis://127.0.0.1:{redis_port}/0", fleet="bench-script")
    from proctor import engine
    budgets = engine.compile_policy(POLICY).budgets
    channels = [{name: grpc.insecure_channel(addr) for name, addr in st.items()} for st in sets]
    try:
        calls = [{name: ch.unary_unary(ECHO if name == "echo" else RESERVE)
                  for name, ch in chs.items()} for chs in channels]
        payloads = [request_bytes(i)
                    for i in range((args.rounds * args.calls + 60 * len(sets)) * len(servers)
                                   + 200)]
        echo_payload = payloads[0]
        k = 0
        for c in calls:  # warm up every path
            for name, call in c.items():
                for _ in range(50 if name != "echo" else 100):
                    call(echo_payload if name == "echo" else payloads[k], timeout=5)
                    k += name != "echo"
        for _ in range(100):
            r.evalsha(trivial, 0)
        loop.run_until_complete(
            store.reserve(budgets, "warm", "acme", "a", "r", "tokens", 1, 60))
        order = ["reserve", "echo", "redis", "script"] + [n for n in servers if n != "reserve"]
        for rnd in range(args.rounds):
            c = calls[rnd % len(calls)]
            for name in (order if rnd % 2 == 0 else order[::-1]):
                out = samples[name]
                for _ in range(args.calls):
                    if name in servers:
                        p = payloads[k]
                        k += 1
                        call = c[name]
                        t0 = time.perf_counter()
                        call(p, timeout=5)
                    elif name == "echo":
                        call = c["echo"]
                        t0 = time.perf_counter()
                        call(echo_payload, timeout=5)
                    elif name == "redis":
                        t0 = time.perf_counter()
                        r.evalsha(trivial, 0)
                    else:
                        rid = uuid.uuid4().hex
                        t0 = time.perf_counter()
                        loop.run_until_complete(store.reserve(
                            budgets, rid, "acme", "a", "r", "tokens", 1, 60))
                    out.append(time.perf_counter() - t0)
    finally:
        for chs in channels:
            for ch in chs.values():
                ch.close()
    loop.run_until_complete(store.close())
    loop.close()
    r.close()
    return {name: summary(v) for name, v in samples.items()}


async def _throughput_once(address: str, method: str, payloads: list[bytes] | None,
                           fixed: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(method)
        end = time.perf_counter() + seconds
        lat: list[float] = []
        counter = [0]

        async def worker() -> None:
            while time.perf_counter() < end:
                if payloads is not None:
                    p = payloads[counter[0] % len(payloads)]
                    counter[0] += 1
                else:
                    p = fixed
                t0 = time.perf_counter()
                await call(p, timeout=5)
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"calls": len(lat), "per_second": round(len(lat) / elapsed, 1),
            "p50_ms": round(pct(lat, 0.5) * 1000, 3), "p99_ms": round(pct(lat, 0.99) * 1000, 3)}


def throughput(args: argparse.Namespace, sets: list[dict[str, str]]) -> dict[str, Any]:
    """Alternating rounds; round r drives server set r % len(sets)."""
    order = list(sets[0])
    out: dict[str, list[dict[str, float]]] = {name: [] for name in order}
    fixed = request_bytes(0)
    for rnd in range(args.tp_rounds):
        st = sets[rnd % len(sets)]
        for name in (order if rnd % 2 == 0 else order[::-1]):
            if name != "echo":
                base = (rnd * len(order) + order.index(name)) * 1_000_000  # ids never repeat
                payloads = [request_bytes(base + i) for i in range(200_000)]
                res = asyncio.run(_throughput_once(st[name], RESERVE, payloads, fixed,
                                                   args.concurrency, args.tp_seconds))
            else:
                res = asyncio.run(_throughput_once(st[name], ECHO, None, fixed,
                                                   args.concurrency, args.tp_seconds))
            out[name].append(res)
    return {name: {"rounds": v, "median_per_second": statistics.median(x["per_second"] for x in v)}
            for name, v in out.items()}


def baseline_command(src: Path) -> tuple[str, str, dict[str, str]]:
    """(python, module, environment) that serve the tree at `src` (see the module docstring)."""
    own = src / ".venv" / "bin" / "python"
    python = str(own) if own.exists() else sys.executable
    env = dict(os.environ)
    if (src / "server" / "src").is_dir():  # today's layout
        module = "proctor.server"
        path = [src / "server" / "src", src / "engine" / "src", src / "clients" / "python" / "src"]
    else:  # before the namespace move: server/, engine/, clients/python/ at the top
        module = "server"
        path = [src, src / "clients" / "python"]
    if not own.exists():
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in path)
    return python, module, env


def parse_variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """--variant NAME:VAR=VALUE[,VAR=VALUE] -> {NAME: {VAR: VALUE}}."""
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, assignments = spec.partition(":")
        if not name or name in ("reserve", "echo", "redis", "script", "baseline"):
            raise SystemExit(f"--variant {spec!r}: give it a name of its own")
        out[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    variants = parse_variants(args.variant)
    workdir = Path(tempfile.mkdtemp(prefix="budget-bench-"))
    procs = Procs(workdir)
    try:
        redis_port = free_port()
        procs.start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                     "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                     "--dir", str(workdir)], "redis")
        wait_port(redis_port)
        (workdir / "policy.yaml").write_text(POLICY)
        sets, reply = _start_sets(procs, args, variants, workdir, redis_port)
        baseline_reply = len(wait_reserve(sets[0]["baseline"])) if args.baseline else 0

        seq = sequential(args, sets, redis_port)
        tp = throughput(args, sets)
        budget_ms = seq["echo"]["p99_ms"] + 1.5 * seq["redis"]["p99_ms"]
        result = {
            "benchmark": "budget_bench",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "load_avg": os.getloadavg()},
            "settings": vars(args) | {"response_bytes": len(reply),
                                      "baseline_response_bytes": baseline_reply,
                                      "request_bytes": len(request_bytes(0))},
            "sequential": seq,
            "throughput": tp,
            "target": {"rule": "reserve p99 <= echo p99 + 1.5 x redis p99",
                       "limit_ms": round(budget_ms, 4),
                       "reserve_p99_ms": seq["reserve"]["p99_ms"],
                       "met": seq["reserve"]["p99_ms"] <= budget_ms},
            "note": "shared 2-core machine, other work running: figures are noisy",
        }
        out = save_result(result, args.out, "budget_bench")
        print(json.dumps({"sequential": seq, "throughput_median_per_second": {
            k: v["median_per_second"] for k, v in tp.items()}, "target": result["target"]},
            indent=2))
        print(f"written to {out}")
        return 0
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tp-seconds", type=float, default=3.0)
    parser.add_argument("--tp-rounds", type=int, default=6)
    parser.add_argument("--instances", type=int, default=3,
                        help="server sets, each on its own hash seed, rotated per round")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--out", default="")
    parser.add_argument("--baseline", default="",
                        help="a source tree to serve as `baseline` beside this one")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:VAR=VALUE[,VAR=VALUE]: this tree again, with that environment")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.tp_seconds, args.tp_rounds = 2, 100, 1.0, 2
        args.instances = 1
    return args


def _start_sets(procs: Procs, args: argparse.Namespace, variants: dict[str, dict[str, str]],
                workdir: Path, redis_port: int) -> tuple[list[dict[str, str]], bytes]:
    """Start every set of servers; return their addresses by name, and a real reply.

    --instances sets of servers (Proctor, echo, baseline), set k on PYTHONHASHSEED=k+1:
    identical Python servers differ in speed by up to ~8% per process (the hash seed
    and the memory layout it leads to), so a round compares one set on one seed and
    the rounds rotate the sets. Start order alternates too.
    """
    proctor = shutil.which("proctor") or str(Path(sys.executable).parent / "proctor")
    sets: list[dict[str, str]] = []
    reply = b""
    for k in range(args.instances):
        seed = {"PYTHONHASHSEED": str(k + 1)}
        names = ["reserve", "echo"] + (["baseline"] if args.baseline else []) + list(variants)
        st: dict[str, str] = {}
        for name in (names if k % 2 == 0 else names[::-1]):
            port = free_port()
            st[name] = f"127.0.0.1:{port}"
            if name == "reserve":
                procs.start([proctor, "serve", "--policy", str(workdir / "policy.yaml"),
                             "--listen", st[name], "--audit-dir", str(workdir / f"audit-{k}"),
                             "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
                            f"proctor-{k}", env={**os.environ, **seed})
                reply = wait_reserve(st[name])
            elif name in variants:
                procs.start([proctor, "serve", "--policy", str(workdir / "policy.yaml"),
                             "--listen", st[name], "--audit-dir",
                             str(workdir / f"audit-{name}-{k}"),
                             "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
                            f"{name}-{k}", env={**os.environ, **seed, **variants[name]})
                wait_reserve(st[name])
            elif name == "baseline":
                python, module, env = baseline_command(Path(args.baseline).resolve())
                procs.start([python, "-m", module, "serve", "--policy",
                             str(workdir / "policy.yaml"), "--listen", st[name],
                             "--audit-dir", str(workdir / f"audit-baseline-{k}"),
                             "--redis-url", f"redis://127.0.0.1:{redis_port}/0"],
                            f"baseline-{k}", env={**env, **seed})
                wait_reserve(st[name])
            else:
                # a reply the size of a real ReserveBudgetResponse (known from set 0,
                # whose Proctor starts first)
                procs.start([sys.executable, str(ROOT / "benchmarks" / "echo_server.py"),
                             "--listen", st[name], "--response-bytes", str(len(reply))],
                            f"echo-{k}", env={**os.environ, **seed})
                wait_port(port)
        sets.append({name: st[name] for name in names})
    return sets, reply


if __name__ == "__main__":
    sys.exit(main())
