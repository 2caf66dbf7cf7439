"""Prometheus series of the Redis layer (registered once per process, like the audit's)."""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

RESTARTS = Counter("proctor_redis_restarts_total",
                   "Restarts of the Redis that holds budgets and approvals (its run id changed)")
DATA_LOST = Counter("proctor_redis_data_lost_total",
                    "Redis restarts that lost Proctor's data (its marker key was gone)")
REFUSED = Gauge("proctor_redis_refused",
                "1 while the Redis is refused by the durability check (no persistence, "
                "or eviction on) and no flag allows it")

_ALL = (RESTARTS, DATA_LOST, REFUSED)
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()


def register(registry: CollectorRegistry) -> None:
    """Also export these series on `registry` (the server's own); idempotent."""
    if registry in _registered or registry is REGISTRY:
        return
    for collector in _ALL:
        registry.register(collector)
    _registered.add(registry)
