"""Past the unary floor (issue 22): unary Evaluate, EvaluateStream and local evaluation,
side by side in one run, beside bare grpcio echo floors of the same message sizes.

Starts `proctor serve` on the seed policy and the echo service of proctor.bench.floor
(unary and bidirectional-stream methods answering replies of the real sizes), then:

1. one call in flight: alternating rounds of unary Evaluate, EvaluateStream, the unary
   echo and the bidi-stream echo (grpc.aio, pre-serialized bytes), so machine drift hits
   all four alike; p50/p99 per decision and the ratios the issue sets targets on;
2. 64 calls in flight: throughput of each in many short rounds, the order reversed
   every other round (one channel each; unary is 64 concurrent calls, the stream one
   open call carrying 64 messages at a time, as the SDK's stream=True shares one
   stream); the medians, the median of each round's stream/unary ratio, and the CPU
   per call of the server's process tree and of this process (the load generator),
   which moves far less than calls/s on a shared machine;
3. through the Python SDK, one call at a time: `evaluate()` unary and `stream=True`;
   then `local=True` in several runs of a fresh client each (decided in process,
   stored in the spool, shipped to the server's audit by the client's shipper thread
   while the calls are timed); a local run ends only when the server has acknowledged
   every decision, and the audit count is checked.

    python benchmarks/stream_bench.py [--quick] [--only wire|sdk|local]
        [--local-runs N] [--local-calls N] [--out PATH]

The requests are the seed policy's allow and deny actions (require_approval always goes
to the server). Results go to --out, or to the results directory outside the checkout,
as JSON with the machine, commit, load average and settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from proctor.bench import results
from proctor.bench.floor import EchoProcess, stream_item_bytes
from proctor.bench.spawn import SpawnedServer, free_port, process_tree_cpu
from proctor.bench.streamcall import RawStream
from proctor.client import ProctorClient
from proctor.v1 import decisions_pb2

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "safety.yaml"
REQUESTS = [
    {"topic": "job.7.delegate.internal", "delegation_path": ["planner", "worker-1"]},
    {"topic": "job.42.export.bulk", "delegation_path": ["planner", "etl-7"],
     "risk_tags": ["bulk-data"]},
    {"topic": "job.9.delegate.internal", "delegation_path": ["root", "planner", "coder"],
     "tenant": "acme", "run_id": "run-1"},
    {"topic": "job.3.download.all", "delegation_path": ["agent"],
     "risk_tags": ["exfiltration-risk"]},
]
EVALUATE = "/proctor.v1.Decisions/Evaluate"
STREAM = "/proctor.v1.Decisions/EvaluateStream"
ECHO_UNARY = "/bench.Echo/Evaluate"
ECHO_STREAM = "/bench.Echo/EvaluateStream"


def quantiles_us(samples_ns: list[int]) -> dict[str, float]:
    s = sorted(samples_ns)
    n = len(s)

    def q(p: float) -> float:
        return round(s[min(n - 1, int(p * n))] / 1000, 2)

    return {"n": n, "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p99_9": q(0.999),
            "max": round(s[-1] / 1000, 2)}


# -- 1 and 2: the wire, on raw bytes ------------------------------------------------------


async def _sequential(call: Any, payloads: list[bytes], n: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        await call(payloads[i % len(payloads)], timeout=10)
        out.append(clock() - t0)


async def _in_flight(call: Any, payloads: list[bytes], seconds: float, flight: int,
                     server_pid: int) -> dict[str, float]:
    """`flight` calls kept in flight for `seconds`: calls/s, and the CPU each call cost this
    process (the load generator) and the server's process tree."""
    done = 0
    end = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < end:
            await call(payloads[i % len(payloads)], timeout=10)
            i += 1
            done += 1

    client0, server0 = time.process_time(), process_tree_cpu(server_pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(flight)))
    wall = time.perf_counter() - start
    client, server = time.process_time() - client0, process_tree_cpu(server_pid) - server0
    return {"per_s": done / wall, "client_cpu_us_per_call": client / done * 1e6,
            "server_cpu_us_per_call": server / done * 1e6}


def _median(rounds: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rounds), 1)


async def wire(proctor: str, echo: str, pids: dict[str, int], payloads: list[bytes],
               rounds: int, per_round: int, tput_rounds: int, seconds: float,
               flight: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(proctor) as pch, \
            grpc.aio.insecure_channel(echo) as ech:
        targets = {
            "unary": pch.unary_unary(EVALUATE),
            "stream": RawStream(pch.stream_stream(STREAM)),
            "echo_unary": ech.unary_unary(ECHO_UNARY),
            "echo_stream": RawStream(ech.stream_stream(ECHO_STREAM)),
        }
        server_pid = {"unary": pids["proctor"], "stream": pids["proctor"],
                      "echo_unary": pids["echo"], "echo_stream": pids["echo"]}
        latency: dict[str, list[int]] = {k: [] for k in targets}
        for call in targets.values():  # connect, open the streams, warm up
            await _sequential(call, payloads, 200, [])
        names = list(targets)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                await _sequential(targets[name], payloads, per_round, latency[name])
        # Many short rounds, the order reversed every other round: on a shared machine the
        # CPU this run gets swings several times over within seconds, so one long round
        # per target compares the neighbours' load, not the targets. Each round's
        # stream/unary ratio pairs two adjacent rounds; CPU per call moves much less.
        tput: dict[str, list[dict[str, float]]] = {k: [] for k in targets}
        for r in range(tput_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                tput[name].append(await _in_flight(targets[name], payloads, seconds, flight,
                                                   server_pid[name]))
    seq = {k: quantiles_us(v) for k, v in latency.items()}
    per_s = {k: _median(v, "per_s") for k, v in tput.items()}
    paired = [s["per_s"] / u["per_s"] for s, u in zip(tput["stream"], tput["unary"],
                                                      strict=True)]
    server_cpu = {k: _median(v, "server_cpu_us_per_call") for k, v in tput.items()}
    client_cpu = {k: _median(v, "client_cpu_us_per_call") for k, v in tput.items()}
    return {
        "one_in_flight_us": seq,
        f"throughput_{flight}_in_flight_per_s": per_s,
        f"throughput_{flight}_in_flight_rounds": tput,
        "server_cpu_us_per_call": server_cpu,
        "client_cpu_us_per_call": client_cpu,
        "ratios": {
            "stream_p50_over_echo_stream_p50":
                round(seq["stream"]["p50"] / seq["echo_stream"]["p50"], 3),
            "stream_p50_over_unary_p50": round(seq["stream"]["p50"] / seq["unary"]["p50"], 3),
            "unary_p50_over_echo_unary_p50":
                round(seq["unary"]["p50"] / seq["echo_unary"]["p50"], 3),
            f"stream_throughput_over_unary_at_{flight}":
                round(per_s["stream"] / per_s["unary"], 3),
            f"stream_throughput_over_unary_at_{flight}_paired_rounds":
                round(statistics.median(paired), 3),
            f"unary_server_cpu_per_call_over_stream_at_{flight}":
                round(server_cpu["unary"] / server_cpu["stream"], 3),
        },
    }


# -- 3: through the SDK -------------------------------------------------------------------


def sdk(proctor: str, n_remote: int) -> dict[str, Any]:
    """evaluate() unary and with stream=True, one call at a time."""
    out: dict[str, Any] = {}
    clock = time.perf_counter_ns
    for mode, kw, n in (("unary", {}, n_remote), ("stream", {"stream": True}, n_remote)):
        with ProctorClient(proctor, **kw) as c:
            samples: list[int] = []
            for i in range(n + 200):
                t0 = clock()
                c.evaluate(**REQUESTS[i % len(REQUESTS)])
                if i >= 200:
                    samples.append(clock() - t0)
        out[mode] = quantiles_us(samples)
    return out


def local_run(proctor: str, n_local: int, spool: Path) -> dict[str, Any]:
    """One local client, `n_local` timed decisions one at a time while its shipper sends
    the spool to the server (nothing pauses it); then the wait until the server has
    acknowledged every decision."""
    clock = time.perf_counter_ns
    c = ProctorClient(proctor, local=True, spool_dir=spool)
    try:
        if not c.wait_for_local_policy(30):
            raise RuntimeError("the local client never got the server's policy")
        local = c.local
        assert local is not None
        evaluate = c.evaluate
        for i in range(2000):  # the first call of each tenant and agent is the server's
            evaluate(**REQUESTS[i % len(REQUESTS)])
        samples = []
        started = clock()
        for i in range(n_local):
            t0 = clock()
            d = evaluate(**REQUESTS[i % len(REQUESTS)])
            samples.append(clock() - t0)
        loop_ns = clock() - started
        decided = local.local_decisions
        shipped_during = local.shipper.shipped
        t0 = clock()
        while local.spool.pending and clock() - t0 < 120e9:
            time.sleep(0.005)
        drained_s = (clock() - t0) / 1e9
        shipped = local.shipper.shipped
        assert d.decision_id.startswith("local-")
    finally:
        c.close()
    return {**quantiles_us(samples), "decided_locally": decided,
            "decided_remotely": n_local + 2000 - decided, "shipped_and_acked": shipped,
            "shipped_while_deciding": shipped_during,
            "seconds_deciding": round(loop_ns / 1e9, 3),
            "seconds_to_drain_after_last_decision": round(drained_s, 3)}


def local(proctor: str, n_local: int, runs: int, spool: Path) -> dict[str, Any]:
    """`runs` local runs (a fresh client and spool each); the medians of their quantiles."""
    each = [local_run(proctor, n_local, spool / str(i)) for i in range(runs)]
    out: dict[str, Any] = {k: statistics.median(r[k] for r in each)
                           for k in ("p50", "p90", "p99", "p99_9", "max")}
    out.update(n=n_local, runs=each, decided_locally=sum(r["decided_locally"] for r in each),
               shipped_and_acked=sum(r["shipped_and_acked"] for r in each))
    return out


def python_floor(p50_us: float, n: int) -> dict[str, Any]:
    """The same timing around constant pure-Python work calibrated to the local p50: the
    p99 this host gives any code of that length, timed one call at a time (on a VM, the
    host's interruptions land on a share of calls that grows with their length). Run
    after the local runs, with the server up and idle: nothing ships meanwhile."""
    def work(k: int) -> int:
        x = 0
        for j in range(k):
            x += j
        return x

    clock = time.perf_counter_ns
    costs = []
    for _ in range(2000):
        t0 = clock()
        work(100)
        costs.append(clock() - t0)
    k = max(1, round(100 * p50_us * 1000 / statistics.median(costs)))
    samples = []
    for _ in range(n):
        t0 = clock()
        work(k)
        samples.append(clock() - t0)
    return {**quantiles_us(samples), "loop_iterations": k}


def audit_local_count(audit: Path) -> int:
    n = 0
    for f in audit.rglob("*.jsonl"):
        n += f.read_bytes().count(b'"source":"local"')
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    p.add_argument("--only", choices=("wire", "sdk", "local"), default="",
                   help="one part: the wire (1 and 2), the SDK remote (3) or local (3)")
    p.add_argument("--flight", type=int, default=64, help="calls in flight for throughput")
    p.add_argument("--local-runs", type=int, default=0,
                   help="local runs of --local-calls decisions each (default 3; --quick 2)")
    p.add_argument("--local-calls", type=int, default=0,
                   help="timed local decisions per run (default 100,000; --quick 20,000)")
    p.add_argument("--out", default="", help="result file (default: the results directory)")
    args = p.parse_args(argv)
    rounds, per_round, tput_rounds, seconds = (
        (4, 300, 4, 0.5) if args.quick else (10, 1000, 8, 1.0))
    n_remote = 2000 if args.quick else 5000
    n_local = args.local_calls or (20000 if args.quick else 100000)
    local_runs = args.local_runs or (2 if args.quick else 3)
    payloads = [decisions_pb2.EvaluateRequest(**r).SerializeToString() for r in REQUESTS]
    work = Path(tempfile.mkdtemp(prefix="proctor-stream-bench-"))
    server = SpawnedServer(SEED, workdir=work).start()
    doc: dict[str, Any] = {}
    try:
        with grpc.insecure_channel(server.address) as ch:
            sizes = [len(ch.unary_unary(EVALUATE)(b, timeout=10)) for b in payloads]
        reply = round(sum(sizes) / len(sizes))
        if args.only in ("", "wire"):
            echo_address = f"127.0.0.1:{free_port()}"
            with EchoProcess(echo_address, reply, {"Evaluate": reply,
                                                   "EvaluateStream": stream_item_bytes(reply)},
                             ) as echo:
                assert server.proc is not None
                pids = {"proctor": server.proc.pid, "echo": echo.proc.pid}
                doc["wire"] = asyncio.run(wire(server.address, echo_address, pids, payloads,
                                               rounds, per_round, tput_rounds, seconds,
                                               args.flight))
        doc["sdk"] = sdk(server.address, n_remote) if args.only in ("", "sdk") else {}
        if args.only in ("", "local"):
            doc["sdk"]["local"] = loc = local(server.address, n_local, local_runs,
                                              work / "spool")
            loc["python_floor"] = python_floor(loc["p50"], n_local)
    finally:
        server.stop()
    doc = {
        "benchmark": "stream_bench",
        "when": results.now().isoformat(timespec="seconds"),
        "machine": results.machine(),
        "commit": results.git_commit(),
        "load_average": os.getloadavg(),
        "settings": {"rounds": rounds, "per_round": per_round, "throughput_rounds": tput_rounds,
                     "seconds": seconds, "flight": args.flight, "sdk_remote_calls": n_remote,
                     "sdk_local_calls": n_local, "sdk_local_runs": local_runs,
                     "response_bytes": reply, "policy": str(SEED.relative_to(ROOT)),
                     "only": args.only or "all"},
        **doc,
        "audit_local_events": audit_local_count(work / "audit"),
    }
    path = results.save_result(doc, args.out or None, "stream_bench")
    print(report(doc))
    print(f"wrote {path}")
    return 0


def report(doc: dict[str, Any]) -> str:
    lines = [f"load average {', '.join(f'{x:.1f}' for x in doc['load_average'])}"]
    w = doc.get("wire")
    if w:
        lines.append("one call in flight (grpc.aio, raw bytes)    p50 us   p99 us")
        for name, q in w["one_in_flight_us"].items():
            lines.append(f"  {name:<40}{q['p50']:>8.1f}{q['p99']:>9.1f}")
        tput_key = next(k for k in w if k.startswith("throughput_") and k.endswith("_per_s"))
        lines.append(f"{tput_key.replace('_', ' ')} (median of rounds), CPU us per call:"
                     "  server  client")
        for name, v in w[tput_key].items():
            lines.append(f"  {name:<30}{v:>10,.0f}/s{w['server_cpu_us_per_call'][name]:>10.0f}"
                         f"{w['client_cpu_us_per_call'][name]:>8.0f}")
        lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in w["ratios"].items()))
    s = doc.get("sdk") or {}
    if s:
        lines.append("through the SDK, one call at a time           p50 us   p99 us  p99.9 us")
    for name, q in s.items():
        lines.append(f"  evaluate() {name:<33}{q['p50']:>8.1f}{q['p99']:>9.1f}"
                     f"{q['p99_9']:>10.1f}")
    loc = s.get("local")
    if loc:
        for i, r in enumerate(loc["runs"]):
            lines.append(f"  local run {i}: p50 {r['p50']} p90 {r['p90']} p99 {r['p99']} us; "
                         f"{r['decided_locally']:,} decided in {r['seconds_deciding']} s, "
                         f"{r['shipped_while_deciding']:,} shipped meanwhile, the rest "
                         f"{r['seconds_to_drain_after_last_decision']} s after")
        f = loc["python_floor"]
        lines.append(f"  constant Python work of the same p50, timed alike: p50 {f['p50']} "
                     f"p90 {f['p90']} p99 {f['p99']} us")
        lines.append(f"local: {loc['decided_locally']:,} decided in process, "
                     f"{loc['shipped_and_acked']:,} shipped and acknowledged, "
                     f"{doc['audit_local_events']:,} local events in the server's audit")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
