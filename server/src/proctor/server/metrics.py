"""Prometheus metrics of one process, served on --metrics-listen.

With --workers N each worker serves its own registry on the port it is given:
worker i listens on PORT+i, so every worker is one scrape target and no
shared multiprocess directory is needed. Every series is per process anyway,
and Prometheus sums them across targets.

The per-request series (decisions by outcome and rule, latency, batch sizes)
are plain counters in this process, mutated only by the event loop thread and
turned into Prometheus families at scrape time by a custom collector: an
Evaluate pays a dict update and a bisect, not a lock and a label lookup.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# Evaluate latency inside the servicer, in seconds: 5 µs .. 100 ms.
_LATENCY_BUCKETS = (
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


class LoopHistogram:
    """A histogram updated from one thread (the event loop) without locks."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        counts = list(self.counts)
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            out.append((repr(float(bound)), float(running)))
        out.append(("+Inf", float(running + counts[-1])))
        return out


class _RequestCollector:
    """Exports the event-loop counters of Metrics at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        decisions = CounterMetricFamily(
            "proctor_decisions", "Decisions by outcome and deciding rule",
            labels=("outcome", "rule_id"),
        )
        for (outcome, rule_id), n in list(m.decision_counts.items()):
            decisions.add_metric((outcome, rule_id), n)
        yield decisions
        invalid = CounterMetricFamily(
            "proctor_invalid_requests", "Requests refused as INVALID_ARGUMENT, by field",
            labels=("method", "field"),
        )
        for (method, field), n in list(m.invalid_counts.items()):
            invalid.add_metric((method, field), n)
        yield invalid
        latency = HistogramMetricFamily(
            "proctor_evaluate_latency_seconds",
            "Time spent deciding inside the server (validate, evaluate, audit), per call",
            labels=("method",),
        )
        for method, hist in (("Evaluate", m.evaluate_latency), ("EvaluateBatch", m.batch_latency)):
            latency.add_metric((method,), hist.buckets(), hist.total)
        yield latency
        sizes = HistogramMetricFamily("proctor_batch_size", "Items per EvaluateBatch call")
        sizes.add_metric((), m.batch_sizes.buckets(), m.batch_sizes.total)
        yield sizes


class Metrics:
    """Every series Proctor's service layer exports, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decision_counts: dict[tuple[str, str], int] = {}
        self.invalid_counts: dict[tuple[str, str], int] = {}
        self.evaluate_latency = LoopHistogram(_LATENCY_BUCKETS)
        self.batch_latency = LoopHistogram(_LATENCY_BUCKETS)
        self.batch_sizes = LoopHistogram(_BATCH_BUCKETS)
        r.register(_RequestCollector(self))
        self.reloads = Counter(
            "proctor_policy_reloads", "Policy reloads by result (ok, failed) and trigger",
            ("result", "trigger"), registry=r,
        )
        self.policy_info = Gauge(
            "proctor_policy_info", "The serving policy (value 1)",
            ("policy_version",), registry=r,
        )
        self.policy_rules = Gauge(
            "proctor_policy_rules", "Rules in the serving policy", registry=r,
        )
        self.reload_failing = Gauge(
            "proctor_policy_reload_failing",
            "1 while the last reload failed and an older policy is serving", registry=r,
        )
        self.draining = Gauge("proctor_draining", "1 while draining on SIGTERM", registry=r)
        self._current_version = ""

    def decided(self, outcome: str, rule_id: str) -> None:
        counts = self.decision_counts
        key = (outcome, rule_id)
        counts[key] = counts.get(key, 0) + 1

    def observe_evaluate(self, seconds: float) -> None:
        self.evaluate_latency.observe(seconds)

    def observe_batch(self, seconds: float, items: int) -> None:
        self.batch_latency.observe(seconds)
        self.batch_sizes.observe(items)

    def invalid(self, method: str, field: str) -> None:
        counts = self.invalid_counts
        key = (method, field)
        counts[key] = counts.get(key, 0) + 1

    def policy_loaded(self, version: str, rules: int) -> None:
        if self._current_version and self._current_version != version:
            self.policy_info.remove(self._current_version)
        self.policy_info.labels(version).set(1)
        self.policy_rules.set(rules)
        self._current_version = version

    def reloaded(self, ok: bool, trigger: str) -> None:
        self.reloads.labels("ok" if ok else "failed", trigger).inc()
        self.reload_failing.set(0 if ok else 1)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)
