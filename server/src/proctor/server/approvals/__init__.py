"""Approvals: require_approval as a workflow bound to the exact action (DESIGN section 5).

| module | what |
|---|---|
| store.py | the ApprovalStore Protocol, records, errors, validation, and the |
|          | semantics chosen where DESIGN is silent                          |
| memory.py | the embedded store (no --redis-url) |
| redis_store.py, lua/ | the Redis / Redis Cluster store: one Lua script per operation |
| binding.py | the action hash that binds an approval to its action |
| gate.py | the Evaluate step: create approvals, consume presented grants |
| events.py | the audit events of kind "approval" |
| service.py | the proctor.v1.Approvals servicer and the store's health watch |
| cli.py | proctor approvals list / approve / deny |

`build_approval_store(settings, redis)` picks the store: Redis (or Redis Cluster,
with `?cluster=1`) when `settings.redis_url` is set, on the process's RedisLayer
`redis` (or one of its own when none is given), the embedded store otherwise. The
limit on pending approvals per tenant is
`settings.max_pending_approvals_per_tenant`.
"""

from __future__ import annotations

from typing import Any

from .store import DEFAULT_MAX_PENDING_PER_TENANT, ApprovalStore


def build_approval_store(settings: Any, redis: Any = None) -> ApprovalStore:
    url = getattr(settings, "redis_url", "") or ""
    pending = int(getattr(settings, "max_pending_approvals_per_tenant",
                          DEFAULT_MAX_PENDING_PER_TENANT))
    if url:
        from .redis_store import RedisApprovalStore

        fleet = getattr(settings, "approval_fleet", "") or "default"
        if redis is not None:
            return RedisApprovalStore(redis, fleet, max_pending_per_tenant=pending)
        return RedisApprovalStore.from_url(url, fleet, max_pending_per_tenant=pending)
    from .memory import MemoryApprovalStore

    return MemoryApprovalStore(max_pending_per_tenant=pending)


__all__ = ["ApprovalStore", "build_approval_store"]
