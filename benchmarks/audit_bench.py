"""Audit benchmark: Evaluate latency with audit off / file / redis, and sink throughput.

    python benchmarks/audit_bench.py [--rounds 12] [--instances 3] [--seconds 3]
                                     [--concurrency 1,8] [--sink-events 100000]
                                     [--out FILE.json]

Starts a private redis-server and `proctor serve` processes on free loopback
ports (`--audit file`; `--audit redis` with --redis-url), --instances of each
on as many hash seeds, then drives Evaluate over real gRPC (closed loop, N in
flight) in alternating rounds, the order rotated every round so drift on a
shared machine hits every mode alike, and the seed rotated every round so no
mode keeps a faster or slower process.

"Off" is the same server process with its audit switched off: this script
re-executes itself as a launcher whose audit forwards to the real pipeline or
drops every event, flipped by SIGUSR1 (the bench waits out one linger after a
flip, so the last batch is written before the other side is measured). So
"file" and "off" (and "redis" and "off-redis") differ in the audit alone, not in
the process: identical server processes differ in speed by up to ~8%, which in
separate processes made the ratio move by ±10% from run to run. --off-process
keeps the earlier way (off in processes of its own, NullAudit) for comparison.

Then it measures each sink's throughput (events/s from the first record() to a
closed, fsynced pipeline) and the request-path cost of record(). Results go to
--out, or to audit-<time>.json in the results directory outside the checkout
(benchmarks/baselines/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proctor.bench.results import git_commit, save_result  # noqa: E402
from proctor.bench.spawn import free_port, wait_port  # noqa: E402

SEED = ROOT / "examples" / "safety.yaml"
MODES = ("off", "file", "off-redis", "redis")
# Each sink is compared with audit off on the same stores: with --redis-url the
# approval store is in Redis too, and require_approval calls pay that round trip.
BASELINE = {"file": "off", "redis": "off-redis"}
# After a switch: the pipeline's linger (250 ms) and its last batch's write, with room.
SETTLE_S = 0.6


def _serve_null_audit(argv: list[str]) -> int:
    """The launcher for mode "off" with --off-process: `proctor serve` with NullAudit as
    the audit factory."""
    import proctor.server.main
    from proctor.server.audit.log import NullAudit
    from proctor.server.cli import main

    proctor.server.main.build_audit = lambda settings, **kw: NullAudit()  # type: ignore[assignment]
    return main(["serve", *argv])


class SwitchedAudit:
    """The server's audit pipeline, or nothing: `on` decides per event (SIGUSR1 flips it
    in the launcher). Both sides pay the same one extra call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.on = True

    @property
    def refusal(self) -> str:
        return str(self.real.refusal) if self.on else ""

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        return bool(self.real.offer(kind, fields)) if self.on else True

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        if self.on:
            await self.real.record(kind, fields)

    def __getattr__(self, name: str) -> Any:  # start, close, flush, ...: the pipeline's
        return getattr(self.real, name)


def _serve_switched(argv: list[str]) -> int:
    """The launcher of every audited mode: `proctor serve` whose audit SIGUSR1 switches
    off and on (see SwitchedAudit)."""
    import proctor.server.main
    from proctor.server.cli import main

    real_build = proctor.server.main.build_audit
    switches: list[SwitchedAudit] = []

    def build(settings: Any, **kw: Any) -> SwitchedAudit:
        switches.append(SwitchedAudit(real_build(settings, **kw)))
        return switches[-1]

    def flip(signum: int, frame: Any) -> None:
        for sw in switches:
            sw.on = not sw.on

    proctor.server.main.build_audit = build  # type: ignore[assignment]
    signal.signal(signal.SIGUSR1, flip)
    return main(["serve", *argv])


def _wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                req = health_pb2.HealthCheckRequest()
                st = health_pb2_grpc.HealthStub(ch).Check(req, timeout=1)
                if st.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not serving")


Servers = dict[tuple[str, int], tuple[subprocess.Popen[bytes], int]]


def _start_servers(work: Path, redis_url: str, instances: int, off_process: bool) -> Servers:
    """`instances` servers per mode, instance k of every mode with PYTHONHASHSEED=k+1;
    without `off_process`, "off" is the "file" server and "off-redis" the "redis" one.

    Why several: identical server processes differ in speed by up to ~8% (seen here:
    four `off` servers, 346-394 us of CPU per call at 8 in flight), with the hash seed
    (and the memory layout it leads to: CPython's method cache is keyed on addresses)
    more than with anything in the code; one fixed seed brought that spread to ~2%.
    A round compares every mode on one seed, and the rounds rotate the seeds, so no
    mode keeps a lucky or unlucky process. Start order alternates too.
    """
    proctor = shutil.which("proctor") or str(Path(sys.executable).parent / "proctor")
    out: Servers = {}
    own = MODES if off_process else tuple(m for m in MODES if m in BASELINE)
    for k in range(instances):
        for mode in (own if k % 2 == 0 else own[::-1]):
            port = free_port()
            home = work / f"{mode}-{k}"
            common = ["--policy", str(SEED), "--listen", f"127.0.0.1:{port}",
                      "--audit-dir", str(home / "audit"), "--log-level", "warning"]
            if mode == "off":
                cmd = [sys.executable, __file__, "--serve-null-audit", *common]
            elif mode == "off-redis":
                cmd = [sys.executable, __file__, "--serve-null-audit", *common,
                       "--redis-url", redis_url, "--redis-allow-volatile"]
            elif off_process and mode == "file":
                cmd = [proctor, "serve", *common, "--audit", "file"]
            elif off_process:
                cmd = [proctor, "serve", *common, "--audit", "redis", "--redis-url", redis_url,
                       "--redis-allow-volatile"]
            elif mode == "file":
                cmd = [sys.executable, __file__, "--serve-switched", *common, "--audit", "file"]
            else:
                cmd = [sys.executable, __file__, "--serve-switched", *common, "--audit", "redis",
                       "--redis-url", redis_url, "--redis-allow-volatile"]
            home.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "PYTHONHASHSEED": str(k + 1)}
            with open(home / "stderr.log", "wb") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
                                        env=env)
            out[(mode, k)] = (proc, port)
            if not off_process:
                out[(BASELINE[mode], k)] = (proc, port)
    for proc, port in set(out.values()):
        _wait_serving(port, proc)
    return out


class Switches:
    """Which switched servers have their audit on; flips a server's audit when the next
    mode driven on it needs the other side, then waits out one linger."""

    def __init__(self) -> None:
        self.off: set[int] = set()

    def set(self, proc: subprocess.Popen[bytes], mode: str) -> None:
        want_off = mode not in BASELINE
        if (proc.pid in self.off) != want_off:
            proc.send_signal(signal.SIGUSR1)
            self.off ^= {proc.pid}
            time.sleep(SETTLE_S)


async def _drive(port: int, seconds: float, concurrency: int) -> list[int]:
    import grpc

    from proctor.v1 import decisions_pb2, decisions_pb2_grpc

    lat: list[int] = []
    topics = [("job.{i}.send.email", ["external"]), ("job.{i}.read.pii", ["pii"]),
              ("job.{i}.delegate.internal", []), ("job.{i}.export.bulk", ["bulk-data"])]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = decisions_pb2_grpc.DecisionsStub(ch)
        # One request id per action: a repeat is a retry of that action, as an agent's
        # would be (one id for two actions would make every require_approval a new
        # approval, a workload no fleet has: each one waits for a human).
        reqs = [decisions_pb2.EvaluateRequest(
            topic=t.format(i=i), risk_tags=tags, delegation_path=["planner", "worker"],
            tenant="acme", run_id="bench", request_id=f"r{i}-{k}")
            for i in range(64) for k, (t, tags) in enumerate(topics)]
        for r in reqs[:50]:
            await stub.Evaluate(r)  # warm the connection
        end = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < end:
                t0 = time.perf_counter_ns()
                await stub.Evaluate(reqs[i % len(reqs)])
                lat.append(time.perf_counter_ns() - t0)
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return lat


def _pct(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def _summary(lat: list[int], seconds: float) -> dict[str, float]:
    s = sorted(lat)
    return {"n": len(s), "p50_us": _pct(s, 0.50), "p90_us": _pct(s, 0.90),
            "p99_us": _pct(s, 0.99), "max_us": s[-1] / 1000.0 if s else 0.0,
            "rps": len(s) / seconds if seconds else 0.0}


async def _sink_throughput(kind: str, n: int, work: Path, redis_url: str) -> dict[str, float]:
    from proctor.server.audit.file_sink import FileSink
    from proctor.server.audit.redis_sink import RedisSink
    from proctor.server.audit.writer import AuditWriter

    sink: Any
    if kind == "file":
        sink = FileSink(work / "tp-file")
    else:
        sink = RedisSink(redis_url, f"bench:tp:{time.time_ns()}", work / "tp-spool")
    p = AuditWriter(sink, writer=f"bench-{kind}", queue_size=8192)
    fields = {"request_id": "r", "run_id": "bench", "tenant": "acme",
              "delegation_path": ["planner", "worker"], "topic": "job.1.send.email",
              "risk_tags": ["external"], "derived_tags": [], "labels": {},
              "outcome": "require_approval", "rule_id": "approve-external-action",
              "reason": "External actions from any agent need approval",
              "policy_version": "71127b8a3735", "decision_id": "01ABC", "approval_id": "",
              "latency_us": 20}
    t0 = time.perf_counter()
    enq = 0.0
    for _ in range(n):
        t1 = time.perf_counter()
        await p.record("decision", dict(fields))
        enq += time.perf_counter() - t1
    await p.close()
    dt = time.perf_counter() - t0
    return {"events": n, "seconds": dt, "events_per_s": n / dt,
            "batches": p.stats["batches"], "mean_record_call_us": enq / n * 1e6}


async def _record_cost(n: int) -> dict[str, float]:
    """The request-path cost of record() alone (async, block, queue never full)."""
    from proctor.server.audit.sink import Sealed, SinkCaps
    from proctor.server.audit.writer import AuditWriter

    class Discard:
        name = "discard"
        caps = SinkCaps()

        async def resume(self, writer: str) -> None:
            return None

        async def write(self, batch: list[Sealed]) -> None:
            return None

        async def close(self) -> None:
            return None

    p = AuditWriter(Discard(), writer="cost", queue_size=n + 10)
    fields = {"topic": "job.1.send.email", "outcome": "allow"}
    p.start()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await p.record("decision", fields)
    per = (time.perf_counter_ns() - t0) / n / 1000.0
    await p.close()
    return {"calls": n, "us_per_call": per}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-null-audit":
        return _serve_null_audit(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-switched":
        return _serve_switched(sys.argv[2:])
    args = _parse_args()
    work = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    rport = free_port()
    redis_proc = subprocess.Popen(  # volatile on purpose: --redis-allow-volatile below
        ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(rport)
    redis_url = f"redis://127.0.0.1:{rport}/0"
    servers: Servers = {}
    result: dict[str, Any] = {}
    try:
        servers = _start_servers(work, redis_url, args.instances, args.off_process)
        switches = Switches()
        evaluate = {f"concurrency_{conc}": _evaluate_rounds(args, servers, switches, conc)
                    for conc in args.concurrency}
        for proc, _ in set(servers.values()):
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        servers = {}
        sinks = {k: asyncio.run(_sink_throughput(k, args.sink_events, work, redis_url))
                 for k in ("file", "redis")}
        cost = asyncio.run(_record_cost(200_000))
        result = {
            "benchmark": "audit",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "note": "shared, noisy machine"},
            "commit": git_commit(),
            "settings": vars(args),
            "evaluate": evaluate,
            "sink_throughput": sinks,
            "record_call": cost,
        }
        brief = {k: {"total": {m: {q: round(v[q], 1) for q in ("p50_us", "p99_us", "rps")}
                               for m, v in e["total"].items()},
                     "ratio_to_audit_off": e["ratio_to_audit_off"]} for k, e in evaluate.items()}
        print(json.dumps({"evaluate": brief, "sinks": sinks, "record_call": cost}, indent=2))
        print(f"wrote {save_result(result, args.out, 'audit')}")
    finally:
        for proc, _ in set(servers.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 12 rounds: with 6 (~18,000 calls a mode at one in flight) the ratio of two pooled
    # p99s moved by up to ±10% from run to run on the same code (0.94-1.14x); twice the
    # calls narrow that spread by about a third (1/sqrt 2).
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--instances", type=int, default=3,
                    help="servers per mode, each on its own hash seed (see _start_servers)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1, 8], help="comma-separated closed-loop concurrencies")
    ap.add_argument("--sink-events", type=int, default=100_000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--off-process", action="store_true",
                    help="audit off in processes of its own (NullAudit), as before")
    return ap.parse_args()


def _evaluate_rounds(args: argparse.Namespace, servers: Servers, switches: Switches,
                     conc: int) -> dict[str, Any]:
    """Evaluate at `conc` in flight, every mode in each round (the order turning): pooled
    percentiles per mode, ratios to its audit-off baseline, and each round's figures."""
    rounds: list[dict[str, Any]] = []
    allv: dict[str, list[int]] = {m: [] for m in MODES}
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        k = r % args.instances  # every mode on the same seed this round
        row: dict[str, Any] = {"round": r, "order": list(order), "instance": k}
        for mode in order:
            proc, port = servers[(mode, k)]
            if not args.off_process:
                switches.set(proc, mode)
            lat = asyncio.run(_drive(port, args.seconds, conc))
            allv[mode] += lat
            row[mode] = _summary(lat, args.seconds)
            print(f"c={conc} round {r} {mode:9}: p50 {row[mode]['p50_us']:7.1f} us  "
                  f"p99 {row[mode]['p99_us']:7.1f} us  {row[mode]['rps']:7.0f}/s",
                  flush=True)
        rounds.append(row)
    total = {m: _summary(allv[m], args.seconds * args.rounds) for m in MODES}
    ratios = {m: {"p50": total[m]["p50_us"] / total[base]["p50_us"],
                  "p99": total[m]["p99_us"] / total[base]["p99_us"],
                  "rps": total[m]["rps"] / total[base]["rps"],
                  "baseline": base} for m, base in BASELINE.items()}
    return {"total": total, "ratio_to_audit_off": ratios, "rounds": rounds}


if __name__ == "__main__":
    sys.exit(main())
