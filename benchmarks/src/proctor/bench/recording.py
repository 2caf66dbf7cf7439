"""What a load run records and reports: histograms, counts and the merged figures.

`Recorder` keeps one load process's figures; `LoadResult` holds the merged
figures of every process and turns them into the result file's `figures`.

Only calls started (intended) inside the measured window count toward the
latency figures and errors; throughput counts every successful answer that
arrived inside the window, whenever its call was sent.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import histo

if TYPE_CHECKING:
    from .drivers import LoadSpec


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


class Recorder:
    """One load process's figures: histograms by op and by interval, errors by status."""

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
