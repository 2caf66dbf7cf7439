"""Fleet budgets: store interface, embedded and Redis stores, service.

`build_budget_store(settings, redis)` picks the store: Redis (or Redis Cluster,
with `?cluster=1` in the URL) when `settings.redis_url` is set, on the process's
RedisLayer `redis` (or one of its own when none is given), the embedded in-process
store otherwise. The fleet name (the Redis hash tag of every budget key) is
`settings.budget_fleet` when such a setting exists, else "default".
"""

from __future__ import annotations

from typing import Any

from .store import BudgetStore


def build_budget_store(settings: Any, redis: Any = None) -> BudgetStore:
    url = getattr(settings, "redis_url", "") or ""
    if url:
        from .redis_store import RedisBudgetStore

        fleet = getattr(settings, "budget_fleet", "") or "default"
        if redis is not None:
            return RedisBudgetStore(redis, fleet)
        return RedisBudgetStore.from_url(url, fleet)
    from .memory import MemoryBudgetStore

    return MemoryBudgetStore()


__all__ = ["BudgetStore", "build_budget_store"]
