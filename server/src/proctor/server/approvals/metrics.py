"""Prometheus series of the approvals (registered once per process, like the audit's)."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

WAITERS = Gauge("proctor_approval_waiters", "WaitApproval calls open in this process")
WAITERS_REFUSED = Counter("proctor_approval_waiters_refused_total",
                          "WaitApproval calls refused past a waiter limit", ["limit"])
NOT_CREATED = Counter("proctor_approvals_not_created_total",
                      "require_approval decisions answered without an approval, by why",
                      ["reason"])

WEBHOOKS = Counter("proctor_approval_webhooks_total",
                   "approval webhook deliveries by outcome (delivered, retried, failed, "
                   "dropped)", ["outcome"])

_ALL = (WAITERS, WAITERS_REFUSED, NOT_CREATED, WEBHOOKS)
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register(registry: CollectorRegistry) -> None:
    """Also export these series on `registry` (the server's own); idempotent."""
    if registry in _registered or registry is REGISTRY:
        return
    for collector in _ALL:
        registry.register(collector)
    _registered.add(registry)
