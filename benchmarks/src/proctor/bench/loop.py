"""The load processes: a closed loop (N calls in flight) or an open loop (a fixed rate).

`run_load` starts P load processes (multiprocessing, spawn), waits until each
has its channels connected, gives them one common start time on the
system-wide monotonic clock, draws a progress bar on stderr while they run,
and merges what they send back (HDR histograms, per-interval histograms,
error counts by status code) into `LoadResult`.

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

Only calls started (intended) inside the measured window count toward the
latency figures and errors; throughput counts every successful answer that
arrived inside the window, whenever its call was sent.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import grpc

from proctor.client._base import bearer_metadata

from . import histo
from .progress import Progress
from .spawn import process_tree_cpu
from .streamcall import ITEM_ERROR_TAG, RawStream, StreamFailure
from .workload import Plan, reservation_prefix

MAX_MESSAGE_BYTES = 1 << 20


class BenchError(RuntimeError):
    """The harness itself failed (a load process died, the server never answered)."""


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


@dataclass
class LoadResult:
    """The merged figures of every load process."""

    mode: str
    duration: float
    histogram: Any
    by_op: dict[str, Any]
    intervals: list[Any]
    interval_done: list[int]
    completed_in_window: int
    errors: dict[str, int]
    service: Any | None = None
    lag: Any | None = None
    procs: int = 1
    load_cpu: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        lat = histo.summary(self.histogram)
        n = len(self.intervals)
        span = self.duration / n if n else self.duration
        intervals = []
        for h, done in zip(self.intervals, self.interval_done, strict=True):
            s = histo.summary(h)
            intervals.append({
                "calls": s["count"],
                "throughput_per_s": round(done / span, 1) if span else 0.0,
                "p50_us": s["p50"],
                "p99_us": s["p99"],
            })
        out: dict[str, Any] = {
            "calls": lat["count"],
            "errors": sum(self.errors.values()),
            "errors_by_code": dict(sorted(self.errors.items())),
            "duration_s": self.duration,
            "throughput_per_s": round(self.completed_in_window / self.duration, 1)
            if self.duration else 0.0,
            "latency_us": lat,
            "by_op": {
                name: {"calls": histo.summary(h)["count"], "latency_us": histo.summary(h)}
                for name, h in sorted(self.by_op.items())
            },
            "intervals": intervals,
            "spread": {
                "p50": relative_spread([i["p50_us"] for i in intervals if i["calls"]]),
                "p99": relative_spread([i["p99_us"] for i in intervals if i["calls"]]),
                "throughput": relative_spread([i["throughput_per_s"] for i in intervals]),
            },
        }
        if self.load_cpu:
            # share of one core each load process used: near 1.0, the generator was the limit
            out["load_cpu_share"] = [round(x, 3) for x in self.load_cpu]
        if self.service is not None:
            out["service_time_us"] = histo.summary(self.service)
        if self.lag is not None:
            out["send_lag_us"] = histo.summary(self.lag)
        out.update(self.extra)
        share = self.extra.get("server_cpu_share")
        if share is not None and out["throughput_per_s"]:
            # server CPU per answered call: steadier than latency on a shared machine
            out["server_cpu_us_per_call"] = round(share / out["throughput_per_s"] * 1e6, 1)
        return out


def relative_spread(values: list[float]) -> float:
    """Standard deviation over mean of per-interval figures: the run's own noise."""
    values = [v for v in values if v]
    if len(values) < 2:
        return 0.0
    mean = statistics.fmean(values)
    return round(statistics.stdev(values) / mean, 4) if mean else 0.0


# -- inside a load process ----------------------------------------------------------------------


class _Recorder:
    def __init__(self, spec: LoadSpec, start_ns: int) -> None:
        self.measure_ns = start_ns + int(spec.warmup * 1e9)
        self.end_ns = self.measure_ns + int(spec.duration * 1e9)
        self.interval_ns = max(1, int(spec.duration * 1e9 / spec.intervals))
        self.service = histo.new_histogram()
        self.lag = histo.new_histogram()
        self.by_op = {op.name: histo.new_histogram() for op in spec.plan.ops}
        self.intervals = [histo.new_histogram() for _ in range(spec.intervals)]
        self.interval_done = [0] * spec.intervals
        self.completed_in_window = 0
        self.errors: dict[str, int] = {}
        self.sent = 0  # every call answered, warmup included (for the progress bar)
        self.failed = 0

    def record(self, op: str, start_ns: int, sent_ns: int, done_ns: int, error: str) -> None:
        self.sent += 1
        if error:
            self.failed += 1
        elif self.measure_ns <= done_ns < self.end_ns:
            # throughput: every answer inside the window, whenever it was sent
            self.completed_in_window += 1
            i = min(len(self.interval_done) - 1, (done_ns - self.measure_ns) // self.interval_ns)
            self.interval_done[i] += 1
        if not self.measure_ns <= start_ns < self.end_ns:
            return
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1
            return
        us = (done_ns - start_ns) / 1000
        histo.record_us(self.by_op[op], us)
        i = min(len(self.intervals) - 1, (start_ns - self.measure_ns) // self.interval_ns)
        histo.record_us(self.intervals[i], us)
        if sent_ns != start_ns:
            histo.record_us(self.service, (done_ns - sent_ns) / 1000)
            histo.record_us(self.lag, (sent_ns - start_ns) / 1000)

    def export(self, mode: str) -> dict[str, Any]:
        return {
            # the whole run is the sum of its ops: recorded once per call, merged here
            "hist": histo.encode(histo.merge(self.by_op.values())),
            "service": histo.encode(self.service) if mode == "open" else b"",
            "lag": histo.encode(self.lag) if mode == "open" else b"",
            "by_op": {k: histo.encode(v) for k, v in self.by_op.items()},
            "intervals": [histo.encode(h) for h in self.intervals],
            "interval_done": self.interval_done,
            "completed_in_window": self.completed_in_window,
            "errors": self.errors,
        }


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


async def _closed(spec: LoadSpec, rec: _Recorder, caller: _Caller) -> None:
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


async def _open(spec: LoadSpec, rec: _Recorder, caller: _Caller, start_ns: int) -> None:
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
        rec = _Recorder(spec, start_ns)
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


# -- in the parent --------------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _specs(address: str, plan: Plan, *, mode: str, warmup: float, duration: float,
           concurrency: int, rate: float, procs: int, max_inflight: int, intervals: int,
           timeout: float) -> list[LoadSpec]:
    """Each load process's share of the concurrency (closed) or rate (open)."""
    if mode == "closed":
        procs = max(1, min(procs, concurrency))
        shares: list[Any] = split(concurrency, procs)
    else:
        procs = max(1, procs)
        shares = [rate / procs] * procs
    caps = split(max_inflight, procs) if max_inflight else [0] * procs
    token = secrets.token_hex(4)
    return [
        LoadSpec(
            address=address, plan=plan, mode=mode, warmup=warmup, duration=duration,
            concurrency=shares[i] if mode == "closed" else 0,
            rate=shares[i] if mode == "open" else 0.0,
            phase=(i / rate) if mode == "open" and rate else 0.0,
            max_inflight=max(1, caps[i]) if max_inflight else 0,
            intervals=intervals,
            channels=max(1, min(4, shares[i])) if mode == "closed" else 2,
            timeout=timeout, index=i, run_token=token,
        )
        for i in range(procs)
    ]


def _wait_ready(ready: Any, workers: list[Any], address: str) -> None:
    """Wait until every load process has its channels connected (at most 60 s)."""
    waiting, give_up = len(workers), time.monotonic() + 60
    while waiting:
        try:
            ready.get(timeout=0.5)
            waiting -= 1
        except Exception:  # queue.Empty
            dead = [w for w in workers if w.exitcode is not None]
            if dead or time.monotonic() > give_up:
                why = f"one exited with {dead[0].exitcode}" if dead else "60 s passed"
                raise BenchError(f"load processes not ready ({address}): {why}") from None


def _collect(results: Any, workers: list[Any], counters: Any, bar: Progress, *, t0: float,
             warmup: float, duration: float, timeout: float, server_pid: int | None,
             ) -> tuple[dict[int, dict[str, Any]], list[tuple[float, float]]]:
    """Gather each process's figures, drawing progress and sampling the server's CPU
    at the start and end of the measured window."""
    got: dict[int, dict[str, Any]] = {}
    deadline = t0 + warmup + duration + timeout + 60
    cpu_marks: list[tuple[float, float]] = []
    while len(got) < len(workers):
        now = time.monotonic()
        wait = 0.2
        if server_pid and len(cpu_marks) < 2:
            mark = t0 + warmup + duration * len(cpu_marks)
            if now >= mark:
                cpu_marks.append((now, process_tree_cpu(server_pid)))
            else:
                wait = min(wait, max(0.001, mark - now))
        bar.update(now - t0, sum(counters[0::2]), sum(counters[1::2]))
        try:
            idx, res = results.get(timeout=wait)
            got[idx] = res
        except Exception:  # queue.Empty
            if time.monotonic() > deadline:
                raise BenchError("load processes did not finish") from None
            if any(not w.is_alive() for w in workers) and results.empty():
                dead = [w for w in workers if not w.is_alive() and w.exitcode]
                if dead:
                    raise BenchError(f"load process exited with {dead[0].exitcode}") from None
    bar.done(sum(counters[0::2]), sum(counters[1::2]))
    return got, cpu_marks


def _merge(got: dict[int, dict[str, Any]], cpu_marks: list[tuple[float, float]], *,
           mode: str, duration: float, intervals: int, procs: int) -> LoadResult:
    """Merge the processes' histograms and counts into one `LoadResult`."""
    failures = [r["failure"] for r in got.values() if "failure" in r]
    if failures:
        raise BenchError("a load process failed:\n" + failures[0])
    parts = [got[i] for i in sorted(got)]
    extra: dict[str, Any] = {}
    if len(cpu_marks) == 2 and cpu_marks[1][0] > cpu_marks[0][0]:
        extra["server_cpu_share"] = round(
            (cpu_marks[1][1] - cpu_marks[0][1]) / (cpu_marks[1][0] - cpu_marks[0][0]), 3)
    errors: dict[str, int] = {}
    for p in parts:
        for code, n in p["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return LoadResult(
        mode=mode,
        duration=duration,
        histogram=histo.merge(p["hist"] for p in parts),
        by_op={name: histo.merge(p["by_op"][name] for p in parts) for name in parts[0]["by_op"]},
        intervals=[histo.merge(p["intervals"][i] for p in parts) for i in range(intervals)],
        interval_done=[sum(p["interval_done"][i] for p in parts) for i in range(intervals)],
        completed_in_window=sum(p["completed_in_window"] for p in parts),
        errors=errors,
        service=histo.merge(p["service"] for p in parts) if mode == "open" else None,
        lag=histo.merge(p["lag"] for p in parts) if mode == "open" else None,
        procs=procs,
        load_cpu=[float(p.get("cpu_share", 0.0)) for p in parts],
        extra=extra,
    )


def run_load(
    address: str,
    plan: Plan,
    *,
    mode: str,
    warmup: float,
    duration: float,
    concurrency: int = 0,
    rate: float = 0.0,
    procs: int = 1,
    max_inflight: int = 0,
    intervals: int = 10,
    timeout: float = 10.0,
    progress: bool = True,
    label: str = "",
    server_pid: int | None = None,
) -> LoadResult:
    """Drive `address` with `plan` from `procs` load processes; merge their figures.

    With `server_pid` (a local server), the CPU it and its child processes use inside
    the measured window is reported as `server_cpu_share` (cores busy on average)."""
    specs = _specs(address, plan, mode=mode, warmup=warmup, duration=duration,
                   concurrency=concurrency, rate=rate, procs=procs,
                   max_inflight=max_inflight, intervals=intervals, timeout=timeout)
    procs = len(specs)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    results = ctx.Queue()
    start_at = ctx.Value("d", 0.0, lock=False)
    counters = ctx.Array("q", 2 * procs, lock=False)
    workers = [
        ctx.Process(target=process_main, args=(s, ready, start_at, counters, results),
                    name=f"bench-load-{s.index}", daemon=True)
        for s in specs
    ]
    for w in workers:
        w.start()
    try:
        _wait_ready(ready, workers, address)
        t0 = time.monotonic() + 0.1
        start_at.value = t0
        bar = Progress(label or f"{mode} {address}", warmup, duration, enabled=progress)
        got, cpu_marks = _collect(results, workers, counters, bar, t0=t0, warmup=warmup,
                                  duration=duration, timeout=timeout, server_pid=server_pid)
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.terminate()
                w.join(5)
    return _merge(got, cpu_marks, mode=mode, duration=duration, intervals=intervals,
                  procs=procs)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
