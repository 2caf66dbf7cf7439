"""Inside one load process: a closed loop (N calls in flight) or an open loop (a fixed rate).

Closed loop: each process runs its share of N coroutines, each sending its
next call as soon as the previous one answers. Latency: send to answer.

Open loop: each process sends at its share of the rate R, whatever the server
does; a pacer thread (time.sleep precision, not asyncio's millisecond timer)
hands the event loop every call that is due. Latency runs from the call's
intended send time, so a server that falls behind shows its queueing delay
instead of slowing the generator down (coordinated omission). `service_time`
(from the actual send) and `send_lag` (actual minus intended send) are kept
too; a large send lag with a small service time means the generator, not
the server, fell behind. `max_inflight` (0: none) caps calls in flight per
process; a call waiting for a slot is still timed from its intended time.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import grpc

from proctor.client._base import bearer_metadata

from .recording import Recorder
from .streamcall import ITEM_ERROR_TAG, RawStream, StreamFailure
from .workload import Plan, reservation_prefix

MAX_MESSAGE_BYTES = 1 << 20


@dataclass
class LoadSpec:
    """What one load process does (picklable)."""

    address: str
    plan: Plan
    mode: str  # "closed" | "open"
    warmup: float
    duration: float
    concurrency: int = 0  # closed: coroutines in this process
    rate: float = 0.0  # open: calls per second from this process
    phase: float = 0.0  # open: offset of this process's first send, seconds
    max_inflight: int = 0  # open: cap on calls in flight (0: none)
    intervals: int = 10
    channels: int = 2
    timeout: float = 10.0
    index: int = 0
    run_token: str = ""


class _Caller:
    """Cycles through the plan's schedule and payloads; one gRPC callable per op and channel."""

    def __init__(self, spec: LoadSpec, channels: list[grpc.aio.Channel]) -> None:
        self.plan = spec.plan
        # A streaming op holds one open stream per channel; its calls are messages on it.
        self.calls = [
            [RawStream(ch.stream_stream(op.method), spec.warmup + spec.duration + spec.timeout
                       + 60) if op.streaming else ch.unary_unary(op.method)
             for ch in channels]
            for op in spec.plan.ops
        ]
        self.n = 0
        self.op_n = [0] * len(spec.plan.ops)
        self.token = f"{spec.run_token or secrets.token_hex(4)}-{spec.index}-"
        self.timeout = spec.timeout

    def next(self, worker: int) -> tuple[str, Any, bytes]:
        n = self.n
        self.n = n + 1
        schedule = self.plan.schedule
        i = schedule[n % len(schedule)]
        op = self.plan.ops[i]
        k = self.op_n[i]
        self.op_n[i] = k + 1
        payload = op.payloads[k % len(op.payloads)]
        if op.fresh_reservation_id:
            payload = reservation_prefix(self.token + str(n)) + payload
        chans = self.calls[i]
        return op.name, chans[worker % len(chans)], payload

    async def send(self, call: Any, payload: bytes) -> str:
        try:
            reply = await call(payload, timeout=self.timeout)
            if type(call) is RawStream and reply[:1] == ITEM_ERROR_TAG:
                return "ITEM_ERROR"
            return ""
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
        except StreamFailure as e:
            return e.code
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (counted, never hidden)
            return f"CLIENT_{type(e).__name__}"


def _channels(spec: LoadSpec) -> list[grpc.aio.Channel]:
    opts = [
        ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES * 64),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    metadata = bearer_metadata()  # $PROCTOR_TOKEN (--token-file sets it): on every call
    interceptors = [_Bearer(metadata)] if metadata else None
    return [grpc.aio.insecure_channel(spec.address, options=opts, interceptors=interceptors)
            for _ in range(spec.channels)]


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.StreamStreamClientInterceptor):
    """Adds the `authorization` metadata to every call of a load channel."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def _details(self, d: Any) -> Any:
        md = grpc.aio.Metadata(*(d.metadata or ()), *self.metadata)
        return d._replace(metadata=md)

    async def intercept_unary_unary(self, continuation: Any, details: Any,
                                    request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_stream_stream(self, continuation: Any, details: Any,
                                      request_iterator: Any) -> Any:
        return await continuation(self._details(details), request_iterator)


async def _closed(spec: LoadSpec, rec: Recorder, caller: _Caller) -> None:
    end = rec.end_ns
    clock = time.monotonic_ns

    async def worker(k: int) -> None:
        while True:
            t0 = clock()
            if t0 >= end:
                return
            name, call, payload = caller.next(k)
            error = await caller.send(call, payload)
            rec.record(name, t0, t0, clock(), error)

    await asyncio.gather(*(worker(k) for k in range(spec.concurrency)))


async def _open(spec: LoadSpec, rec: Recorder, caller: _Caller, start_ns: int) -> None:
    loop = asyncio.get_running_loop()
    clock = time.monotonic_ns
    interval = 1e9 / spec.rate
    first = start_ns + int(spec.phase * 1e9)
    end = rec.end_ns
    sem = asyncio.Semaphore(spec.max_inflight) if spec.max_inflight > 0 else None
    tasks: set[asyncio.Task[None]] = set()
    finished = asyncio.Event()
    stop = threading.Event()
    worker_no = [0]

    async def one(intended: int) -> None:
        acquired = False
        try:
            if sem is not None:
                await sem.acquire()
                acquired = True
            sent = clock()
            k = worker_no[0]
            worker_no[0] = k + 1
            name, call, payload = caller.next(k)
            error = await caller.send(call, payload)
            rec.record(name, intended, sent, clock(), error)
        except asyncio.CancelledError:
            # still queued (or in flight) when the drain gave up: counted, not hidden
            rec.record("", intended, intended, clock(), "CLIENT_NOT_ANSWERED_BY_DRAIN")
            raise
        finally:
            if acquired and sem is not None:
                sem.release()

    def launch(due: list[int]) -> None:
        for t in due:
            task = loop.create_task(one(t))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def pacer() -> None:
        i = 0
        try:
            while not stop.is_set():
                t = first + int(i * interval)
                if t >= end:
                    break
                wait = t - clock()
                if wait > 0:
                    time.sleep(wait / 1e9)
                now = clock()
                due = []
                while t <= now and t < end:
                    due.append(t)
                    i += 1
                    t = first + int(i * interval)
                if due:
                    loop.call_soon_threadsafe(launch, due)
        finally:
            loop.call_soon_threadsafe(finished.set)

    thread = threading.Thread(target=pacer, name="bench-pacer", daemon=True)
    thread.start()
    try:
        await finished.wait()
        if tasks:
            await asyncio.wait(set(tasks), timeout=spec.timeout + 5)
    finally:
        stop.set()
        thread.join(5)
        pending = list(tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


async def _run_async(spec: LoadSpec, ready: Any, start_at: Any, progress: Any) -> dict[str, Any]:
    channels = _channels(spec)
    try:
        for ch in channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
        caller = _Caller(spec, channels)
        if ready is not None:
            ready.put(spec.index)
        while start_at is not None and start_at.value == 0.0:
            await asyncio.sleep(0.005)
        start_ns = int(start_at.value * 1e9) if start_at is not None else time.monotonic_ns()
        rec = Recorder(spec, start_ns)
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        cpu0, wall0 = time.process_time(), time.monotonic()

        async def report() -> None:
            while True:
                if progress is not None:
                    progress[2 * spec.index] = rec.sent
                    progress[2 * spec.index + 1] = rec.failed
                await asyncio.sleep(0.1)

        reporter = asyncio.create_task(report())
        try:
            if spec.mode == "closed":
                await _closed(spec, rec, caller)
            else:
                await _open(spec, rec, caller, start_ns)
        finally:
            reporter.cancel()
        out = rec.export(spec.mode)
        out["cpu_share"] = (time.process_time() - cpu0) / max(1e-9, time.monotonic() - wall0)
        return out
    finally:
        for ch in channels:
            await ch.close()


def run_spec(spec: LoadSpec, ready: Any = None, start_at: Any = None,
             progress: Any = None) -> dict[str, Any]:
    """Run one load process's share in this process (also usable in-process by tests)."""
    return asyncio.run(_run_async(spec, ready, start_at, progress))


def process_main(spec: LoadSpec, ready: Any, start_at: Any, progress: Any, results: Any) -> None:
    try:
        results.put((spec.index, run_spec(spec, ready, start_at, progress)))
    except BaseException:  # noqa: BLE001 (reported to the parent)
        results.put((spec.index, {"failure": traceback.format_exc()}))
        ready.put(spec.index)
