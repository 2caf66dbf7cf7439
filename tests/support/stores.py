"""The harness of the store contract suites (budgets, approvals).

One `env` per kind of store: the embedded one (time moved by a fake clock), a
private standalone redis-server and a private 3-master Redis Cluster (time
moved by real sleeps). A suite subclasses StoreEnv with its own `make_store`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pytest

T = TypeVar("T")
S = TypeVar("S")

STORE_KINDS = ["memory", "redis", "cluster"]


class FakeClock:
    """The embedded stores' clock in tests: time moves only when a test says so."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class StoreEnv(Generic[S]):
    """How a test reaches one kind of store, and how time passes for it."""

    kind: str  # memory | redis | cluster
    url: str = ""
    clock: FakeClock | None = None

    def make_store(self) -> S:
        raise NotImplementedError

    def now(self) -> float:
        return self.clock() if self.clock else time.time()

    async def sleep(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.t += seconds
        else:
            await asyncio.sleep(seconds)

    async def sleep_until(self, epoch: float) -> None:
        await self.sleep(max(0.0, epoch - self.now()) + 0.05)

    def run(self, fn: Callable[[S], Awaitable[T]]) -> T:
        """Build a store inside a fresh event loop, run fn on it, close it."""

        async def main() -> T:
            store: Any = self.make_store()
            await store.start()
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(main())


def env_for(request: pytest.FixtureRequest, env_cls: type[StoreEnv[Any]]) -> StoreEnv[Any]:
    """The env of a fixture parametrized over STORE_KINDS."""
    if request.param == "memory":
        return env_cls("memory", clock=FakeClock())
    if request.param == "redis":
        return env_cls("redis", url=request.getfixturevalue("store_redis").url)
    cluster = request.getfixturevalue("redis_cluster")
    return env_cls("cluster", url=cluster.url + "?cluster=1")
