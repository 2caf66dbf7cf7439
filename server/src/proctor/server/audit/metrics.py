"""Prometheus metrics of the audit pipeline (registered once per process)."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

QUEUE_DEPTH = Gauge("proctor_audit_queue_depth", "Audit events waiting for the writer")
WRITTEN = Counter("proctor_audit_events_written_total", "Audit events stored by a sink", ["sink"])
SHED = Counter("proctor_audit_shed_total", "Audit events shed because the queue was full")
SINK_ERRORS = Counter("proctor_audit_sink_errors_total", "Failed audit sink writes", ["sink"])
SPOOLED = Counter(
    "proctor_audit_spooled_total", "Audit events spooled to disk while Redis was unreachable"
)
BATCH_EVENTS = Gauge("proctor_audit_last_batch_events", "Events in the writer's last batch")

_ALL = (QUEUE_DEPTH, WRITTEN, SHED, SINK_ERRORS, SPOOLED, BATCH_EVENTS)
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register(registry: CollectorRegistry) -> None:
    """Also export the audit series on `registry` (the server's own); idempotent."""
    if registry in _registered or registry is REGISTRY:
        return
    for collector in _ALL:
        registry.register(collector)
    _registered.add(registry)
