"""The load processes of one run, from the parent: start them, time them, merge them.

`run_load` starts P load processes (multiprocessing, spawn), waits until each
has its channels connected, gives them one common start time on the
system-wide monotonic clock, draws a progress bar on stderr while they run,
and merges what they send back (HDR histograms, per-interval histograms,
error counts by status code) into `LoadResult`. What each process does, the
closed or the open loop, is drivers.py's; what it records, recording.py's.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import time
from typing import Any

from . import histo
from .drivers import MAX_MESSAGE_BYTES, LoadSpec, process_main, run_spec
from .progress import Progress
from .recording import LoadResult, relative_spread
from .spawn import process_tree_cpu
from .workload import Plan

# Imported from here by the runner and the tests, though they live in drivers.py and
# recording.py.
__all__ = ["MAX_MESSAGE_BYTES", "BenchError", "LoadResult", "LoadSpec", "cpu_count",
           "process_main", "relative_spread", "run_load", "run_spec", "split"]


class BenchError(RuntimeError):
    """The harness itself failed (a load process died, the server never answered)."""


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
