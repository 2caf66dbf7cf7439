"""The approval store contract, run against the embedded store, a standalone Redis and a
3-master Redis Cluster (the `env` fixture)."""

from __future__ import annotations

import asyncio

import pytest

from proctor.server.approvals.store import (
    APPROVED,
    CONSUMED,
    DENIED,
    EXPIRED,
    MISMATCH,
    NOT_FOUND,
    PENDING,
    ApprovalNotFound,
    ApprovalStore,
    FailedPrecondition,
    InvalidArgument,
    StoreFull,
    TenantFull,
)

from .conftest import Env, draft


def test_create_get_and_the_whole_request_is_kept(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft(request_id="r-1", tags=("external", "pii"))
        res = await store.create(d)
        assert res.created
        a = res.approval
        assert a.status == PENDING and a.approval_id.startswith("apv_")
        assert a.expires_at - a.created_at == pytest.approx(3600, abs=0.01)
        got = await store.get(a.approval_id)
        assert got.draft == d
        assert (got.topic, got.tenant, got.delegation_path) == (
            "job.1.send.email", "acme", ("agent-a", "agent-c"))
        assert got.labels == {"env": "prod"} and got.approvers == ("gov",)
        assert (got.reviewer, got.resolved_at, got.consumed_by) == ("", 0.0, "")

    env.run(scenario)


def test_retry_with_the_same_request_id_returns_the_same_approval(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        first = await store.create(draft(request_id="r-1"))
        again = await store.create(draft(request_id="r-1"))
        assert not again.created and again.approval.approval_id == first.approval.approval_id
        # Another tenant, another request id, or no request id: a new approval.
        other = await store.create(draft(request_id="r-1", tenant="globex"))
        assert other.created and other.approval.approval_id != first.approval.approval_id
        assert (await store.create(draft(request_id="r-2"))).created
        a1 = await store.create(draft())
        a2 = await store.create(draft())
        assert a1.approval.approval_id != a2.approval.approval_id
        # The same request id for another action: a new approval, not the first one.
        moved = await store.create(draft("job.1.send.sms", request_id="r-1"))
        assert moved.created and moved.approval.approval_id != first.approval.approval_id
        # A denied approval is still the answer to a retry (no fresh chance by retrying).
        d = await store.create(draft(request_id="r-9"))
        await store.resolve(d.approval.approval_id, False, "alice", "no")
        retry = await store.create(draft(request_id="r-9"))
        assert not retry.created and retry.approval.status == DENIED

    env.run(scenario)


def test_approve_then_consume_once(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft(request_id="r-1")
        aid = (await store.create(d)).approval.approval_id
        a = await store.resolve(aid, True, "alice", "ok for this run")
        assert (a.status, a.reviewer, a.resolution_reason) == (APPROVED, "alice", "ok for this run")
        assert a.resolved_at > 0
        wrong = await store.consume(aid, "0" * 64, "dec-x")
        assert (wrong.consumed, wrong.refusal) == (False, MISMATCH)
        ok = await store.consume(aid, d.action_hash, "dec-1")
        assert ok.consumed and ok.approval is not None
        assert (ok.approval.status, ok.approval.consumed_by) == (CONSUMED, "dec-1")
        again = await store.consume(aid, d.action_hash, "dec-2")
        assert (again.consumed, again.refusal) == (False, CONSUMED)
        assert (await store.get(aid)).consumed_by == "dec-1"
        # Consumed: the request id no longer points at it.
        assert (await store.create(d)).created

    env.run(scenario)


def test_racing_consumers_use_a_grant_once(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft()
        aid = (await store.create(d)).approval.approval_id
        await store.resolve(aid, True, "alice", "")
        results = await asyncio.gather(
            *[store.consume(aid, d.action_hash, f"dec-{i}") for i in range(8)]
        )
        assert sum(r.consumed for r in results) == 1

    env.run(scenario)


def test_pending_denied_and_unknown_ids_unlock_nothing(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft()
        aid = (await store.create(d)).approval.approval_id
        pending = await store.consume(aid, d.action_hash, "dec-1")
        assert (pending.consumed, pending.refusal) == (False, PENDING)
        await store.resolve(aid, False, "bob", "PII export outside approved processor list")
        denied = await store.consume(aid, d.action_hash, "dec-2")
        assert (denied.consumed, denied.refusal) == (False, DENIED)
        unknown = await store.consume("apv_nope", d.action_hash, "dec-3")
        assert (unknown.consumed, unknown.refusal, unknown.approval) == (False, NOT_FOUND, None)

    env.run(scenario)


def test_resolving_twice_or_bad_input(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        aid = (await store.create(draft())).approval.approval_id
        with pytest.raises(InvalidArgument, match="reviewer"):
            await store.resolve(aid, True, "", "ok")
        with pytest.raises(InvalidArgument, match="reason"):
            await store.resolve(aid, False, "bob", "  ")
        with pytest.raises(InvalidArgument, match="approval_id"):
            await store.resolve("", True, "bob", "")
        with pytest.raises(InvalidArgument, match="approval_id"):
            await store.get("x" * 129)
        assert (await store.get(aid)).status == PENDING  # nothing touched
        await store.resolve(aid, False, "bob", "no")
        with pytest.raises(FailedPrecondition, match="denied"):
            await store.resolve(aid, True, "alice", "")
        with pytest.raises(ApprovalNotFound):
            await store.resolve("apv_unknown", True, "alice", "")
        with pytest.raises(ApprovalNotFound):
            await store.get("apv_unknown")
        with pytest.raises(InvalidArgument, match="status"):
            await store.list(status="bogus")
        with pytest.raises(InvalidArgument, match="limit"):
            await store.list(limit=5000)

    env.run(scenario)


def test_pending_expires_counts_as_denied_and_is_reported_once(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft(ttl=1, request_id="r-1")
        aid = (await store.create(d)).approval.approval_id
        await env.sleep(1.2)
        a = await store.get(aid)
        assert a.status == EXPIRED
        with pytest.raises(FailedPrecondition, match="expired"):
            await store.resolve(aid, True, "alice", "")
        r = await store.consume(aid, d.action_hash, "dec-1")
        assert (r.consumed, r.refusal) == (False, EXPIRED)
        assert [x.approval_id for x in env.expired] == [aid]
        # Expired: a retry of the request creates a new approval.
        assert (await store.create(d)).created

    env.run(scenario)


def test_an_approved_grant_expires_unused(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        d = draft(ttl=1)
        aid = (await store.create(d)).approval.approval_id
        a = await store.resolve(aid, True, "alice", "")
        assert a.expires_at >= a.resolved_at + 1 - 0.01
        await env.sleep(1.2)
        assert await store.expire_due() == tuple(env.expired)
        r = await store.consume(aid, d.action_hash, "dec-1")
        assert (r.consumed, r.refusal) == (False, EXPIRED)
        assert (await store.get(aid)).reviewer == "alice"  # history kept
        assert len(env.expired) == 1

    env.run(scenario)


def test_list_filters_newest_first(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        a = (await store.create(draft(tenant="acme", approvers=("gov",)))).approval
        b = (await store.create(draft(tenant="globex", approvers=("sec",)))).approval
        c = (await store.create(draft(tenant="acme", approvers=()))).approval
        await store.resolve(b.approval_id, True, "alice", "")
        ids = [x.approval_id for x in await store.list()]
        assert ids == [c.approval_id, b.approval_id, a.approval_id]
        assert [x.approval_id for x in await store.list(status="pending")] == [
            c.approval_id, a.approval_id]
        assert [x.approval_id for x in await store.list(tenant="globex")] == [b.approval_id]
        # A group sees what it may resolve: its own, and those without approvers.
        assert [x.approval_id for x in await store.list(approver="sec")] == [
            c.approval_id, b.approval_id]
        assert [x.approval_id for x in await store.list(limit=1)] == [c.approval_id]
        assert await store.list(status="consumed") == []

    env.run(scenario)


def test_wait_returns_on_resolution_or_timeout(env: Env) -> None:
    async def scenario(store: ApprovalStore) -> None:
        aid = (await store.create(draft())).approval.approval_id
        timed_out = await store.wait(aid, 0.3)
        assert timed_out.status == PENDING

        waiter = asyncio.create_task(store.wait(aid, 10))
        done, _ = await asyncio.wait({waiter}, timeout=0.3)
        assert not done  # open while the approval is pending
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await store.resolve(aid, True, "alice", "fine")
        a = await waiter
        assert a.status == APPROVED and loop.time() - t0 < 5  # on the resolution, not at 10 s
        with pytest.raises(ApprovalNotFound):
            await store.wait("apv_unknown", 1)

    env.run(scenario)


def test_stores_sharing_a_fleet_see_one_set(env: Env) -> None:
    if env.kind == "memory":
        pytest.skip("the embedded store lives in one process")

    async def scenario(store: ApprovalStore) -> None:
        fleet = store.prefix.split("{apv:")[1].split("}")[0]  # type: ignore[attr-defined]
        other = env.make_store(fleet)
        try:
            await other.start()
            aid = (await store.create(draft(request_id="r-1"))).approval.approval_id
            again = await other.create(draft(request_id="r-1"))
            assert again.approval.approval_id == aid and not again.created
            await other.resolve(aid, True, "alice", "")
            assert (await store.get(aid)).status == APPROVED
        finally:
            await other.close()

    env.run(scenario)


def test_a_cap_on_open_approvals(env: Env) -> None:
    env.max_open = 2

    async def scenario(store: ApprovalStore) -> None:
        a = await store.create(draft(request_id="r-1"))
        b = await store.create(draft())
        with pytest.raises(StoreFull):
            await store.create(draft())
        # A retry of an open one still answers; closing one makes room.
        assert not (await store.create(draft(request_id="r-1"))).created
        await store.resolve(b.approval.approval_id, False, "bob", "no")
        assert (await store.create(draft())).created
        assert a.approval.status == "pending"

    env.run(scenario)


def test_a_cap_on_pending_approvals_per_tenant(env: Env) -> None:
    env.max_pending = 3

    async def scenario(store: ApprovalStore) -> None:
        made = [await store.create(draft(request_id=f"r-{i}")) for i in range(3)]
        for _ in range(2):
            with pytest.raises(TenantFull, match="'acme' has 3 approvals pending"):
                await store.create(draft())
        # other tenants are not affected; a retry of a pending one still answers
        other = await store.create(draft(tenant="globex"))
        assert other.created and other.approval.tenant == "globex"
        assert not (await store.create(draft(request_id="r-0"))).created
        # resolving (approving or denying) or an expiry makes room again
        await store.resolve(made[0].approval.approval_id, True, "bob", "")
        assert (await store.create(draft(request_id="r-3"))).created
        with pytest.raises(TenantFull):
            await store.create(draft())
        await store.resolve(made[1].approval.approval_id, False, "bob", "no")
        short = await store.create(draft(ttl=1))
        with pytest.raises(TenantFull):
            await store.create(draft())
        await env.sleep_until(short.approval.expires_at)
        assert (await store.create(draft())).created

    env.run(scenario)
