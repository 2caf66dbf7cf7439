"""Past the unary floor (issue 22): unary Evaluate, EvaluateStream and local evaluation,
side by side in one run, beside bare grpcio echo floors of the same message sizes.

Starts `proctor serve` on the seed policy and the echo service of proctor.bench.floor
(unary and bidirectional-stream methods answering replies of the real sizes), then:

1. one call in flight: alternating rounds of unary Evaluate, EvaluateStream, the unary
   echo and the bidi-stream echo (grpc.aio, pre-serialized bytes), so machine drift hits
   all four alike; p50/p99 per decision and the ratios the issue sets targets on;
2. 64 calls in flight: throughput of each, alternating rounds (one channel; the stream
   is one open call carrying 64 messages at a time);
3. through the Python SDK, one call at a time: `evaluate()` unary, `stream=True` and
   `local=True` (decided in process, written to the spool, shipped to the server's
   audit in the background); the local run ends only when the server has acknowledged
   every decision, and the audit count is checked.

    python benchmarks/stream_bench.py [--quick] [--out PATH]

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
from proctor.bench.spawn import SpawnedServer, free_port
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


async def _in_flight(call: Any, payloads: list[bytes], seconds: float, flight: int) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < end:
            await call(payloads[i % len(payloads)], timeout=10)
            i += 1
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(flight)))
    return done / (time.perf_counter() - start)


async def wire(proctor: str, echo: str, payloads: list[bytes], rounds: int, per_round: int,
               seconds: float, flight: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(proctor) as pch, \
            grpc.aio.insecure_channel(echo) as ech:
        targets = {
            "unary": pch.unary_unary(EVALUATE),
            "stream": RawStream(pch.stream_stream(STREAM)),
            "echo_unary": ech.unary_unary(ECHO_UNARY),
            "echo_stream": RawStream(ech.stream_stream(ECHO_STREAM)),
        }
        latency: dict[str, list[int]] = {k: [] for k in targets}
        for call in targets.values():  # connect, open the streams, warm up
            await _sequential(call, payloads, 200, [])
        names = list(targets)
        for r in range(rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                await _sequential(targets[name], payloads, per_round, latency[name])
        throughput: dict[str, list[float]] = {k: [] for k in targets}
        for r in range(max(2, rounds // 3)):
            for name in names if r % 2 == 0 else names[::-1]:
                throughput[name].append(
                    await _in_flight(targets[name], payloads, seconds, flight))
    seq = {k: quantiles_us(v) for k, v in latency.items()}
    tput = {k: round(statistics.median(v), 1) for k, v in throughput.items()}
    return {
        "one_in_flight_us": seq,
        f"throughput_{flight}_in_flight_per_s": tput,
        "ratios": {
            "stream_p50_over_echo_stream_p50":
                round(seq["stream"]["p50"] / seq["echo_stream"]["p50"], 3),
            "stream_p50_over_unary_p50": round(seq["stream"]["p50"] / seq["unary"]["p50"], 3),
            "unary_p50_over_echo_unary_p50":
                round(seq["unary"]["p50"] / seq["echo_unary"]["p50"], 3),
            f"stream_throughput_over_unary_at_{flight}":
                round(tput["stream"] / tput["unary"], 3),
        },
    }


# -- 3: through the SDK -------------------------------------------------------------------


def sdk(proctor: str, n_remote: int, n_local: int, spool: Path) -> dict[str, Any]:
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
    c = ProctorClient(proctor, local=True, spool_dir=spool)
    try:
        if not c.wait_for_local_policy(30):
            raise RuntimeError("the local client never got the server's policy")
        local = c.local
        assert local is not None
        samples = []
        for i in range(n_local + 2000):
            t0 = clock()
            d = c.evaluate(**REQUESTS[i % len(REQUESTS)])
            if i >= 2000:
                samples.append(clock() - t0)
        decided = local.local_decisions
        remote = n_local + 2000 - decided
        t0 = clock()
        while local.spool.pending and clock() - t0 < 120e9:
            time.sleep(0.01)
        drained_s = (clock() - t0) / 1e9
        shipped = local.shipper.shipped
        assert d.decision_id.startswith("local-")
    finally:
        c.close()
    out["local"] = {**quantiles_us(samples), "decided_locally": decided,
                    "decided_remotely": remote, "shipped_and_acked": shipped,
                    "seconds_to_drain_after_last_decision": round(drained_s, 3)}
    return out


def audit_local_count(audit: Path) -> int:
    n = 0
    for f in audit.rglob("*.jsonl"):
        n += f.read_bytes().count(b'"source":"local"')
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    p.add_argument("--flight", type=int, default=64, help="calls in flight for throughput")
    p.add_argument("--out", default="", help="result file (default: the results directory)")
    args = p.parse_args(argv)
    rounds, per_round, seconds = (4, 300, 1.0) if args.quick else (10, 1000, 2.0)
    n_remote, n_local = (2000, 20000) if args.quick else (5000, 100000)
    payloads = [decisions_pb2.EvaluateRequest(**r).SerializeToString() for r in REQUESTS]
    work = Path(tempfile.mkdtemp(prefix="proctor-stream-bench-"))
    server = SpawnedServer(SEED, workdir=work).start()
    try:
        with grpc.insecure_channel(server.address) as ch:
            sizes = [len(ch.unary_unary(EVALUATE)(b, timeout=10)) for b in payloads]
        reply = round(sum(sizes) / len(sizes))
        echo_address = f"127.0.0.1:{free_port()}"
        with EchoProcess(echo_address, reply,
                         {"Evaluate": reply, "EvaluateStream": stream_item_bytes(reply)}):
            wire_figures = asyncio.run(wire(server.address, echo_address, payloads, rounds,
                                            per_round, seconds, args.flight))
        sdk_figures = sdk(server.address, n_remote, n_local, work / "spool")
    finally:
        server.stop()
    in_audit = audit_local_count(work / "audit")
    doc = {
        "benchmark": "stream_bench",
        "when": results.now().isoformat(timespec="seconds"),
        "machine": results.machine(),
        "commit": results.git_commit(),
        "load_average": os.getloadavg(),
        "settings": {"rounds": rounds, "per_round": per_round, "seconds": seconds,
                     "flight": args.flight, "sdk_remote_calls": n_remote,
                     "sdk_local_calls": n_local, "response_bytes": reply,
                     "policy": str(SEED.relative_to(ROOT))},
        "wire": wire_figures,
        "sdk": sdk_figures,
        "audit_local_events": in_audit,
    }
    path = results.save_result(doc, args.out or None, "stream_bench")
    print(report(doc))
    print(f"wrote {path}")
    return 0


def report(doc: dict[str, Any]) -> str:
    w, s = doc["wire"], doc["sdk"]
    lines = [f"load average {', '.join(f'{x:.1f}' for x in doc['load_average'])}",
             "one call in flight (grpc.aio, raw bytes)    p50 us   p99 us"]
    for name, q in w["one_in_flight_us"].items():
        lines.append(f"  {name:<40}{q['p50']:>8.1f}{q['p99']:>9.1f}")
    tput_key = next(k for k in w if k.startswith("throughput_"))
    lines.append(f"{tput_key.replace('_', ' ')}:")
    for name, v in w[tput_key].items():
        lines.append(f"  {name:<40}{v:>10,.0f}/s")
    lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in w["ratios"].items()))
    lines.append("through the SDK, one call at a time           p50 us   p99 us  p99.9 us")
    for name, q in s.items():
        lines.append(f"  evaluate() {name:<33}{q['p50']:>8.1f}{q['p99']:>9.1f}"
                     f"{q['p99_9']:>10.1f}")
    loc = s["local"]
    lines.append(f"local: {loc['decided_locally']:,} decided in process, "
                 f"{loc['shipped_and_acked']:,} shipped and acknowledged, "
                 f"{doc['audit_local_events']:,} local events in the server's audit")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
