"""Latency histograms: HDR histograms in microseconds, merged across load processes.

Each load process records into its own `HdrHistogram` and ships it back to the
parent in HDR's compressed wire encoding (`encode`); the parent decodes and adds
them (`merge`). HDR histograms add exactly, so the merged percentiles are those
of one histogram fed every value (the test holds it to that).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: anything slower is clamped to it
SIGNIFICANT_FIGURES = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def record_us(histogram: HdrHistogram, value_us: float) -> None:
    """Record one latency in microseconds (clamped into the trackable range)."""
    v = int(value_us + 0.5)
    histogram.record_value(LOWEST_US if v < LOWEST_US else min(v, HIGHEST_US))


def encode(histogram: HdrHistogram) -> bytes:
    """HDR's compressed, base64-wrapped encoding: small and picklable."""
    data: bytes = histogram.encode()
    return data


def merge(encoded: Iterable[bytes | HdrHistogram]) -> HdrHistogram:
    """One histogram holding every value of the given ones (encoded or not)."""
    total = new_histogram()
    for item in encoded:
        if isinstance(item, HdrHistogram):
            total.add(item)
        elif item:
            total.decode_and_add(item)
    return total


def summary(histogram: HdrHistogram) -> dict[str, Any]:
    """p50, p90, p99, p99.9, min, max and mean in microseconds; all 0 when empty."""
    count = histogram.get_total_count()
    out: dict[str, Any] = {"count": count}
    if not count:
        out.update({name: 0.0 for name, _ in PERCENTILES})
        out.update({"min": 0.0, "max": 0.0, "mean": 0.0})
        return out
    values = histogram.get_percentile_to_value_dict([p for _, p in PERCENTILES])
    for name, p in PERCENTILES:
        out[name] = float(values[p])
    out["min"] = float(histogram.get_min_value())
    out["max"] = float(histogram.get_max_value())
    out["mean"] = round(float(histogram.get_mean_value()), 1)
    return out


def bins(histogram: HdrHistogram, buckets: int = 60) -> list[tuple[float, int]]:
    """(upper bound in microseconds, count) over log-spaced buckets, for the histogram plot."""
    count = histogram.get_total_count()
    if not count:
        return []
    lo = max(LOWEST_US, histogram.get_min_value())
    hi = max(lo + 1, histogram.get_max_value())
    ratio = (hi / lo) ** (1.0 / buckets)
    edges = [lo * ratio ** (i + 1) for i in range(buckets)]
    counts = [0] * buckets
    for item in histogram.get_recorded_iterator():
        value = item.value_iterated_to
        i = 0
        while i < buckets - 1 and value > edges[i]:
            i += 1
        counts[i] += item.count_added_in_this_iter_step
    return [(round(e, 1), c) for e, c in zip(edges, counts, strict=True)]
