"""Budget test fixtures: one `env` parametrized over the embedded store, a standalone
redis-server and a 3-master Redis Cluster, each test on a fleet (hash tag) of its own."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

import engine
from engine import model as engine_model
from server.budgets.memory import MemoryBudgetStore
from server.budgets.redis_store import RedisBudgetStore, connect
from server.budgets.store import RECORD_MARGIN_SECONDS, BudgetStore
from tests.support.redis import RedisProcess, start_redis

T = TypeVar("T")
Budget = getattr(engine, "Budget", None) or engine_model.Budget
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


class FakeClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class Env:
    """How a test reaches one kind of store, and how time passes for it."""

    kind: str  # memory | redis | cluster
    url: str = ""
    clock: FakeClock | None = None

    margin: int = RECORD_MARGIN_SECONDS

    def make_store(self) -> BudgetStore:
        if self.kind == "memory":
            self.clock = self.clock or FakeClock()
            return MemoryBudgetStore(clock=self.clock, record_margin_seconds=self.margin)
        return RedisBudgetStore(connect(self.url), fleet=f"t-{uuid.uuid4().hex[:12]}",
                                record_margin_seconds=self.margin)

    def now(self) -> float:
        return self.clock() if self.clock else time.time()

    async def sleep(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.t += seconds
        else:
            await asyncio.sleep(seconds)

    async def sleep_until(self, epoch: float) -> None:
        await self.sleep(max(0.0, epoch - self.now()) + 0.05)

    def run(self, fn: Callable[[BudgetStore], Awaitable[T]]) -> T:
        """Build a store inside a fresh event loop, run fn on it, close it."""

        async def main() -> T:
            store = self.make_store()
            await store.start()
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(main())


@pytest.fixture(scope="session")
def budget_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private standalone redis-server shared by the budget tests (own fleet per test)."""
    r = start_redis(Path(tmp_path_factory.mktemp("budget-redis")))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
def env(request: pytest.FixtureRequest) -> Env:
    if request.param == "memory":
        return Env("memory", clock=FakeClock())
    if request.param == "redis":
        return Env("redis", url=request.getfixturevalue("budget_redis").url)
    cluster = request.getfixturevalue("redis_cluster")
    return Env("cluster", url=cluster.url + "?cluster=1")
