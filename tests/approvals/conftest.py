"""Approval test fixtures: `env` parametrized over the embedded store, a standalone
redis-server and a 3-master Redis Cluster, each test on a fleet (hash tag) of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from server.approvals.binding import action_hash
from server.approvals.memory import MemoryApprovalStore
from server.approvals.redis_store import RedisApprovalStore, connect
from server.approvals.store import Approval, ApprovalStore, Draft
from tests.support.redis import RedisProcess, start_redis

T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def draft(topic: str = "job.1.send.email", *, tenant: str = "acme", request_id: str = "",
          tags: tuple[str, ...] = ("external",), approvers: tuple[str, ...] = ("gov",),
          ttl: int = 3600, run_id: str = "run-1",
          path: tuple[str, ...] = ("agent-a", "agent-c")) -> Draft:
    return Draft(
        request_id=request_id, run_id=run_id, tenant=tenant, delegation_path=path,
        topic=topic, risk_tags=tags, derived_tags=(), labels={"env": "prod"},
        rule_id="approve-external-action", reason="External actions need approval",
        approvers=approvers, policy_version="pv-1", decision_id=f"dec-{uuid.uuid4().hex[:8]}",
        action_hash=action_hash(tenant=tenant, run_id=run_id, delegation_path=path,
                                topic=topic, risk_tags=tags, labels={"env": "prod"}),
        ttl_seconds=ttl,
    )


@dataclass
class Env:
    """How a test reaches one kind of store, and how time passes for it."""

    kind: str  # memory | redis | cluster
    url: str = ""
    clock: FakeClock | None = None
    expired: list[Approval] = field(default_factory=list)

    max_open: int = 100_000

    def make_store(self, fleet: str = "") -> ApprovalStore:
        if self.kind == "memory":
            store: ApprovalStore = MemoryApprovalStore(clock=self.clock or FakeClock(),
                                                       max_open=self.max_open)
        else:
            store = RedisApprovalStore(connect(self.url), fleet=fleet or uuid.uuid4().hex[:12],
                                       max_open=self.max_open)

        async def listen(items: tuple[Approval, ...]) -> None:
            self.expired.extend(items)

        store.on_expired = listen
        return store

    async def sleep(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.t += seconds
        else:
            await asyncio.sleep(seconds)

    def run(self, fn: Callable[[ApprovalStore], Awaitable[T]]) -> T:
        async def main() -> T:
            store = self.make_store()
            await store.start()
            try:
                return await fn(store)
            finally:
                await store.close()

        return asyncio.run(main())


@pytest.fixture(scope="session")
def approvals_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    r = start_redis(Path(tmp_path_factory.mktemp("approvals-redis")))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(params=["memory", "redis", "cluster"])
def env(request: pytest.FixtureRequest) -> Env:
    if request.param == "memory":
        return Env("memory", clock=FakeClock())
    if request.param == "redis":
        return Env("redis", url=request.getfixturevalue("approvals_redis").url)
    cluster = request.getfixturevalue("redis_cluster")
    return Env("cluster", url=cluster.url + "?cluster=1")
