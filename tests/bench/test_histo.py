"""HDR histograms recorded in several processes merge into the histogram of all values."""

from __future__ import annotations

import multiprocessing
import random

from proctor.bench import histo


def _record(seed: int) -> bytes:
    rng = random.Random(seed)
    h = histo.new_histogram()
    for _ in range(20_000):
        # a long tail: mostly ~300 us, some ms, a few hundred ms
        histo.record_us(h, rng.lognormvariate(5.7, 0.6) * (50 if rng.random() < 0.01 else 1))
    return histo.encode(h)


def _values(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(5.7, 0.6) * (50 if rng.random() < 0.01 else 1)
            for _ in range(20_000)]


def test_merge_across_processes_equals_one_histogram_of_all_values() -> None:
    seeds = [11, 12, 13, 14]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        encoded = pool.map(_record, seeds)
    merged = histo.summary(histo.merge(encoded))

    single = histo.new_histogram()
    everything: list[float] = []
    for seed in seeds:
        for v in _values(seed):
            histo.record_us(single, v)
        everything += _values(seed)
    assert merged == histo.summary(single)
    assert merged["count"] == 80_000

    # and within HDR's precision (3 significant figures) of the exact percentiles
    everything.sort()
    for name, p in histo.PERCENTILES:
        exact = everything[int(p / 100 * len(everything)) - 1]
        assert abs(merged[name] - exact) <= exact * 0.002 + 1, (name, merged[name], exact)
    assert abs(merged["max"] - everything[-1]) <= everything[-1] * 0.002 + 1


def test_empty_and_clamped() -> None:
    assert histo.summary(histo.merge([]))["count"] == 0
    assert histo.summary(histo.merge([b""]))["p99"] == 0.0
    h = histo.new_histogram()
    histo.record_us(h, 0.2)  # below the lowest trackable value
    histo.record_us(h, 1e13)  # above the highest
    s = histo.summary(h)
    assert s["count"] == 2
    assert s["min"] == 1.0
    assert s["max"] >= histo.HIGHEST_US * 0.999


def test_bins_cover_every_value() -> None:
    h = histo.new_histogram()
    for v in (100, 200, 400, 800, 5000, 5000):
        histo.record_us(h, v)
    bins = histo.bins(h, buckets=10)
    assert sum(c for _, c in bins) == 6
    assert bins[-1][0] >= 5000
