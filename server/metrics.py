"""Prometheus metrics of one process, served on --metrics-listen.

With --workers N each worker serves its own registry on the port it is given:
worker i listens on PORT+i, so every worker is one scrape target and no
shared multiprocess directory is needed. Every series is per process anyway,
and Prometheus sums them across targets.

Hot-path counters are bound to their label values once and cached, so an
Evaluate pays a dict lookup and an increment, not a label resolution.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

# Evaluate latency inside the servicer, in seconds: 5 µs .. 100 ms.
_LATENCY_BUCKETS = (
    5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3,
)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


class Metrics:
    """Every series Proctor's service layer exports, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "proctor_decisions", "Decisions by outcome and deciding rule",
            ("outcome", "rule_id"), registry=r,
        )
        self.invalid_requests = Counter(
            "proctor_invalid_requests", "Requests refused as INVALID_ARGUMENT, by field",
            ("method", "field"), registry=r,
        )
        self.latency = Histogram(
            "proctor_evaluate_latency_seconds",
            "Time spent deciding one request inside the server (validate, evaluate, audit)",
            ("method",), buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "proctor_batch_size", "Items per EvaluateBatch call",
            buckets=_BATCH_BUCKETS, registry=r,
        )
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
        self._decision_children: dict[tuple[str, str], Counter] = {}
        self._latency_evaluate = self.latency.labels("Evaluate")
        self._latency_batch = self.latency.labels("EvaluateBatch")
        self._current_version = ""

    def decided(self, outcome: str, rule_id: str) -> None:
        key = (outcome, rule_id)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(outcome, rule_id)
        child.inc()

    def observe_evaluate(self, seconds: float) -> None:
        self._latency_evaluate.observe(seconds)

    def observe_batch(self, seconds: float, items: int) -> None:
        self._latency_batch.observe(seconds)
        self.batch_size.observe(items)

    def invalid(self, method: str, field: str) -> None:
        self.invalid_requests.labels(method, field).inc()

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
