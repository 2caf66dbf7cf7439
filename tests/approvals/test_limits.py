"""Limits that keep one caller from starving the rest (DESIGN section 7), on real
`proctor serve` processes: pending approvals per tenant, open WaitApproval calls per
connection and in total, and a thousand waits whose deadlines pass together."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proctor.client import ProctorClient
from proctor.v1 import approvals_pb2, approvals_pb2_grpc
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until_async

POLICY = """\
version: v1
rules:
  - id: ask
    match: {topics: ["job.*.send.*"]}
    decision: require_approval
    reason: "sends need approval"
    approval_ttl: 1h
"""
PATH = ["orchestrator", "agent-c"]


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


def _ask(c: ProctorClient, tenant: str, n: int = 0) -> Any:
    return c.evaluate(f"job.{n}.send.email", delegation_path=PATH, tenant=tenant, run_id="r")


def _resolve(server: ProctorProcess, aid: str, approve: bool, reason: str = "") -> None:
    with grpc.insecure_channel(server.address) as ch:
        approvals_pb2_grpc.ApprovalsStub(ch).ResolveApproval(approvals_pb2.ResolveApprovalRequest(
            approval_id=aid, approve=approve, reviewer="r", reason=reason), timeout=5)


def _metric(server: ProctorProcess, name: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_tenant_flooding_approvals_does_not_starve_the_others(
        store: str, policy: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    args = ["--max-pending-approvals-per-tenant", "40"]
    if store == "redis":
        args += ["--redis-url", request.getfixturevalue("redis_proc").url]
    server = start_proctor(policy, tmp_path / "s", *args)
    try:
        with ProctorClient(server.address, timeout=5.0) as c:
            flood = [_ask(c, "flood", i) for i in range(120)]
            assert all(d.decision == "require_approval" for d in flood)
            assert len({d.approval_id for d in flood[:40]}) == 40
            for d in flood[40:]:
                assert d.approval_id == ""
                assert "'flood' has 40 approvals pending" in d.reason
                assert "--max-pending-approvals-per-tenant" in d.reason
            other = _ask(c, "acme")
            assert other.decision == "require_approval" and other.approval_id
            assert c.get_approval(other.approval_id).status == "pending"
            # a reviewer clears one of the flood's: that tenant gets one more, no more
            _resolve(server, flood[0].approval_id, False, "spam")
            assert _ask(c, "flood", 999).approval_id
            assert _ask(c, "flood", 1000).approval_id == ""
    finally:
        assert server.stop() == 0, server.log()


def test_open_waits_are_limited_per_connection_and_in_total(policy: Path,
                                                            tmp_path: Path) -> None:
    server = start_proctor(policy, tmp_path / "s", "--max-approval-waiters", "8",
                           "--max-approval-waiters-per-connection", "5", metrics=True)
    with ProctorClient(server.address, timeout=5.0) as c:
        aid = _ask(c, "acme").approval_id

    async def main() -> None:
        # separate connections: a channel of its own subchannel pool each
        opts = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(server.address, options=opts) as one, \
                grpc.aio.insecure_channel(server.address, options=opts) as two:
            waits = []

            def wait(ch: Any, seconds: float = 30) -> Any:
                stub = approvals_pb2_grpc.ApprovalsStub(ch)
                return asyncio.ensure_future(stub.WaitApproval(
                    approvals_pb2.WaitApprovalRequest(approval_id=aid), timeout=seconds))

            waits += [wait(one) for _ in range(5)]
            await _until(lambda: _metric(server, "proctor_approval_waiters") == 5)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await wait(one)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-approval-waiters-per-connection" in (e.value.details() or "")
            waits += [wait(two) for _ in range(3)]  # another connection still has room
            await _until(lambda: _metric(server, "proctor_approval_waiters") == 8)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await wait(two)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "(--max-approval-waiters)" in (e.value.details() or "")
            _resolve(server, aid, True)
            done = await asyncio.gather(*waits)
            assert {a.status for a in done} == {approvals_pb2.APPROVAL_STATUS_APPROVED}
            await _until(lambda: _metric(server, "proctor_approval_waiters") == 0)
            again = await wait(one, 0.5)  # room again: the pending answer before the deadline
            assert again.approval_id == aid

    try:
        asyncio.run(main())
    finally:
        assert server.stop() == 0, server.log()


async def _until(check: Any, timeout: float = 10.0) -> None:
    await wait_until_async(check, "the waiter count", timeout, interval=0.05)


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_thousand_waits_whose_deadlines_pass_together(
        store: str, policy: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    args = ["--max-approval-waiters", "1000", "--max-approval-waiters-per-connection", "1000"]
    if store == "redis":
        args += ["--redis-url", request.getfixturevalue("redis_proc").url]
    server = start_proctor(policy, tmp_path / "s", *args, metrics=True)
    with ProctorClient(server.address, timeout=5.0) as c:
        aid = _ask(c, "acme").approval_id

    async def burst(ch: Any, seconds: float) -> list[Any]:
        stub = approvals_pb2_grpc.ApprovalsStub(ch)
        calls = [stub.WaitApproval(approvals_pb2.WaitApprovalRequest(approval_id=aid),
                                   timeout=seconds) for _ in range(1000)]
        return await asyncio.gather(*calls, return_exceptions=True)

    def outcome(r: Any) -> str:
        if isinstance(r, grpc.aio.AioRpcError):
            return r.code().name
        assert r.approval_id == aid
        return approvals_pb2.ApprovalStatus.Name(r.status)

    async def main() -> None:
        async with grpc.aio.insecure_channel(server.address) as ch:
            for _ in range(2):  # the second burst finds every waiter of the first gone
                got = {outcome(r) for r in await burst(ch, 3.0)}
                assert got <= {"APPROVAL_STATUS_PENDING", "DEADLINE_EXCEEDED"}, got
                await _until(lambda: _metric(server, "proctor_approval_waiters") == 0)
            waiting = asyncio.ensure_future(burst(ch, 30.0))
            await _until(lambda: _metric(server, "proctor_approval_waiters") == 1000)
            _resolve(server, aid, True)
            got = {outcome(r) for r in await waiting}
            assert got == {"APPROVAL_STATUS_APPROVED"}

    try:
        asyncio.run(main())
    finally:
        assert server.stop() == 0, server.log()
