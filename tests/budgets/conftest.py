"""Budget test fixtures: one `env` parametrized over the embedded store, a standalone
redis-server and a 3-master Redis Cluster, each test on a fleet (hash tag) of its own."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from proctor.engine import Budget
from proctor.server.budgets.memory import MemoryBudgetStore
from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.store import RECORD_MARGIN_SECONDS, BudgetStore
from tests.support.stores import STORE_KINDS, FakeClock, StoreEnv, env_for

_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def budget(
    id: str,
    unit: str,
    limit: int,
    *,
    window: str = "none",
    scope: str = "fleet",
    kind: str = "spend",
) -> Any:
    """An engine.Budget built directly (as compile_policy would from the YAML)."""
    m = _SPAN.match(window)
    if m:
        kind_w, seconds = "fixed", int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        kind_w, seconds = window, 0
    return Budget(
        id=id, unit=unit, limit=limit, window=kind_w, window_seconds=seconds,
        window_spec=window, scope=scope, kind=kind, line=0,
    )


@dataclass
class Env(StoreEnv[BudgetStore]):
    """A budget store of one kind, each on a fleet (hash tag) of its own."""

    margin: int = RECORD_MARGIN_SECONDS

    def make_store(self) -> BudgetStore:
        if self.kind == "memory":
            self.clock = self.clock or FakeClock()
            return MemoryBudgetStore(clock=self.clock, record_margin_seconds=self.margin)
        # as `proctor serve` builds it: RespClient on one Redis, redis-py on a Cluster
        return RedisBudgetStore.from_url(self.url, f"t-{uuid.uuid4().hex[:12]}",
                                         record_margin_seconds=self.margin)


@pytest.fixture(params=STORE_KINDS)
def env(request: pytest.FixtureRequest) -> StoreEnv[BudgetStore]:
    return env_for(request, Env)
