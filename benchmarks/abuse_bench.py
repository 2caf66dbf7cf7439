"""Evaluate beside an abusive caller: p50/p99 on a quiet server against while each abuse runs.

Starts one `proctor serve` (seed policy, embedded stores, file audit) and, for
each abuse, a process that runs it when told to:

- streams: 200 Audit.StreamDecisions streams following every event from the start, on
  one connection (past --max-audit-streams-per-principal they are refused: the report
  counts those, `streams_refused`);
- batches: full EvaluateBatch calls (--batch-items, default 1000), 2 in flight;
- approvals: an approval flood, require_approval calls with fresh request ids from
  one tenant, 32 in flight (past --max-pending-approvals-per-tenant they get no
  approval id, and other tenants are unaffected);
- load: the control, plain allow Evaluate calls from another tenant, 32 in flight:
  what any busy caller costs the others on one event loop.

Rounds alternate, the order flipping every round: a quiet round (the abuse
paused) and an abused one, each --calls sequential Evaluate calls from this
process. Issue 19 §6 asks for Evaluate within 2x of quiet while each runs.

    python benchmarks/abuse_bench.py [--rounds 6] [--calls 300] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import grpc

from proctor.bench.results import git_commit, machine
from proctor.bench.spawn import free_port
from proctor.v1 import audit_pb2, decisions_pb2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from service_bench import Procs, percentile, proctor_cmd, wait_ready  # noqa: E402

EVALUATE = "/proctor.v1.Decisions/Evaluate"
BATCH = "/proctor.v1.Decisions/EvaluateBatch"
STREAM = "/proctor.v1.Audit/StreamDecisions"
ABUSES = ("streams", "batches", "approvals", "load")
CALL_TIMEOUT_S = 10.0
PATH = ["orchestrator", "research-agent", "mailer"]
QUIET = decisions_pb2.EvaluateRequest(
    topic="job.42.delegate.internal", delegation_path=PATH, tenant="quiet").SerializeToString()

LOAD = decisions_pb2.EvaluateRequest(
    topic="job.42.delegate.internal", delegation_path=PATH, tenant="busy").SerializeToString()


def _approval_request(i: int) -> bytes:
    return decisions_pb2.EvaluateRequest(
        topic="job.42.send.email", risk_tags=["external"], delegation_path=PATH,
        tenant="flood", request_id=f"flood-{i}").SerializeToString()


# -- the abusive caller, in its own process ------------------------------------------------


async def _streams(channel: grpc.aio.Channel, active: Event, stop: Event,
                   count: Synchronized[int], refused: Synchronized[int], n: int) -> None:
    request = audit_pb2.StreamDecisionsRequest(follow=True).SerializeToString()
    stream = channel.unary_stream(STREAM)

    async def drain(call: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                async for _ in call:
                    count.value += 1
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused.value += 1

    while not stop.is_set():
        if not active.is_set():
            await asyncio.sleep(0.01)
            continue
        refused.value = 0
        calls = [stream(request) for _ in range(n)]
        tasks = [asyncio.ensure_future(drain(c)) for c in calls]
        while active.is_set() and not stop.is_set():
            await asyncio.sleep(0.01)
        for c in calls:
            c.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _loop(channel: grpc.aio.Channel, active: Event, stop: Event, count: Synchronized[int],
                method: str, make: Any, inflight: int) -> None:
    call = channel.unary_unary(method)
    seq = 0

    async def worker() -> None:
        nonlocal seq
        while not stop.is_set():
            if not active.is_set():
                await asyncio.sleep(0.01)
                continue
            seq += 1
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call(make(seq), timeout=30)
                count.value += 1

    await asyncio.gather(*[worker() for _ in range(inflight)])


def abuse(kind: str, address: str, active: Event, stop: Event, count: Synchronized[int],
          refused: Synchronized[int], batch_items: int) -> None:
    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            if kind == "streams":
                await _streams(channel, active, stop, count, refused, 200)
            elif kind == "batches":
                batch = decisions_pb2.EvaluateBatchRequest(requests=[
                    decisions_pb2.EvaluateRequest.FromString(QUIET)] * batch_items
                ).SerializeToString()
                await _loop(channel, active, stop, count, BATCH, lambda i: batch, 2)
            elif kind == "approvals":
                await _loop(channel, active, stop, count, EVALUATE, _approval_request, 32)
            else:
                await _loop(channel, active, stop, count, EVALUATE, lambda i: LOAD, 32)

    asyncio.run(main())


# -- the measurement -----------------------------------------------------------------------


def sequential(address: str, n: int, errors: list[str]) -> list[float]:
    """n Evaluate calls one after another: latencies in µs (a failed call counts its time
    until it failed, and its status goes to `errors`)."""
    out = []
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(EVALUATE)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            try:
                call(QUIET, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as e:
                errors.append(str(e.code()))
            out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def _figures(values: list[float]) -> dict[str, float]:
    return {"p50_us": round(percentile(values, 50), 1),
            "p99_us": round(percentile(values, 99), 1), "samples": len(values)}


def measure(kind: str, address: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    active, stop = ctx.Event(), ctx.Event()
    count, refused = ctx.Value("q", 0), ctx.Value("q", -1)
    proc = ctx.Process(target=abuse, args=(kind, address, active, stop, count, refused,
                                           args.batch_items))
    proc.start()
    lat: dict[str, list[float]] = {"quiet": [], "abused": []}
    errors: dict[str, list[str]] = {"quiet": [], "abused": []}
    abuse_s = 0.0
    abused_count = 0  # the abuser's successes while quiet calls were being timed
    try:
        for r in range(args.rounds):
            for side in (("quiet", "abused") if r % 2 == 0 else ("abused", "quiet")):
                if side == "abused":
                    active.set()
                    time.sleep(args.settle)  # streams opened, batches under way
                    t0, counted = time.monotonic(), count.value
                lat[side].extend(sequential(address, args.calls, errors[side]))
                if side == "abused":
                    abuse_s += time.monotonic() - t0
                    abused_count += count.value - counted
                    active.clear()
                    time.sleep(args.settle)  # the abuse winds down before a quiet round
    finally:
        stop.set()
        active.clear()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    out: dict[str, Any] = {side: {**_figures(v), "errors": len(errors[side])}
                           for side, v in lat.items()}
    out["ratio"] = {
        "p50": round(out["abused"]["p50_us"] / out["quiet"]["p50_us"], 3),
        "p99": round(out["abused"]["p99_us"] / out["quiet"]["p99_us"], 3),
    }
    unit = {"streams": "events_streamed", "batches": "batches"}.get(kind, "calls")
    # Counted over the timed windows only: the settling before and after each abused
    # round would add the abuser's work while nothing was timed.
    out["abuse"] = {unit + "_per_s": round(abused_count / max(abuse_s, 1e-9), 1)}
    if kind == "streams":  # in the last abused round
        out["abuse"]["streams_refused"] = refused.value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate beside abusive callers")
    parser.add_argument("--policy", default=str(ROOT / "examples" / "safety.yaml"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=300, help="Evaluate calls per round")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between switching an abuse and measuring")
    parser.add_argument("--batch-items", type=int, default=1000)
    parser.add_argument("--abuse", action="append", choices=ABUSES,
                        help="which abuses (repeatable); default all")
    parser.add_argument("--serve-arg", action="append", default=[])
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "abuse_bench",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "commit": git_commit(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory(prefix="proctor-abuse-") as tmp:
        procs = Procs()
        try:
            procs.start(proctor_cmd(Path(args.policy), address,
                                    ["--audit-dir", str(Path(tmp) / "audit"), *args.serve_arg]),
                        "proctor")
            wait_ready(address, EVALUATE, QUIET)
            sequential(address, 50, [])  # warm up
            for kind in args.abuse or ABUSES:
                report[kind] = measure(kind, address, args)
                print(json.dumps({kind: report[kind]}), flush=True)
        finally:
            # The server stops before its audit directory is removed: it writes until then.
            procs.close()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
