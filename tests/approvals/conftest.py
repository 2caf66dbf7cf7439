"""Approval test fixtures: `env` parametrized over the embedded store, a standalone
redis-server and a 3-master Redis Cluster, each test on a fleet (hash tag) of its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from proctor.server.approvals.binding import action_hash
from proctor.server.approvals.memory import MemoryApprovalStore
from proctor.server.approvals.redis_store import RedisApprovalStore
from proctor.server.approvals.store import Approval, ApprovalStore, Draft
from tests.support.stores import STORE_KINDS, FakeClock, StoreEnv, env_for


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
class Env(StoreEnv[ApprovalStore]):
    """An approval store of one kind; expiries it reports are collected in `expired`."""

    expired: list[Approval] = field(default_factory=list)
    max_open: int = 100_000
    max_pending: int = 1000

    def make_store(self, fleet: str = "") -> ApprovalStore:
        if self.kind == "memory":
            store: ApprovalStore = MemoryApprovalStore(clock=self.clock or FakeClock(),
                                                       max_open=self.max_open,
                                                       max_pending_per_tenant=self.max_pending)
        else:
            # RespClient on one Redis, redis-py on Cluster: the contract holds on both
            store = RedisApprovalStore.from_url(self.url, fleet or uuid.uuid4().hex[:12],
                                                max_open=self.max_open,
                                                max_pending_per_tenant=self.max_pending)

        async def listen(items: tuple[Approval, ...]) -> None:
            self.expired.extend(items)

        store.on_expired = listen
        return store


@pytest.fixture(params=STORE_KINDS)
def env(request: pytest.FixtureRequest) -> StoreEnv[ApprovalStore]:
    return env_for(request, Env)
