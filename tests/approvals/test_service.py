"""The Approvals servicer over real gRPC (in-process grpc.aio server) and the Evaluate gate:
answers, error codes, audit events, health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from proctor import engine
from proctor.server.approvals.gate import ApprovalGate
from proctor.server.approvals.memory import MemoryApprovalStore
from proctor.server.approvals.service import ApprovalsService
from proctor.server.approvals.store import ApprovalStore, StoreUnavailable
from proctor.v1 import approvals_pb2, approvals_pb2_grpc
from tests.support.wait import wait_until_async

POLICY = engine.compile_policy("""\
version: v1
default: {decision: require_approval, reason: "unknown actions need a look"}
derive_tags:
  - topics: ["job.*.send.*"]
    add: [external]
rules:
  - id: approve-external-action
    match: {topics: ["job.*.send.*"], risk_tags: ["external"]}
    decision: require_approval
    reason: "External actions from any agent need approval"
    approvers: ["data-governance"]
    approval_ttl: 1h
  - id: deny-bulk-export
    match: {topics: ["job.*.export.bulk"]}
    decision: deny
    reason: "Bulk data export blocked"
""")

S = approvals_pb2


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, fields))

    def ops(self) -> list[str]:
        return [f["op"] for k, f in self.events if k == "approval"]


class RecordingHealth:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def set_service(self, name: str, serving: bool) -> None:
        self.changes.append((name, serving))


Scenario = Callable[[approvals_pb2_grpc.ApprovalsStub, ApprovalsService, RecordingAudit],
                    Awaitable[None]]


def serve(scenario: Scenario, store: ApprovalStore | None = None) -> RecordingAudit:
    audit = RecordingAudit()

    async def main() -> None:
        svc = ApprovalsService(store or MemoryApprovalStore(), audit, RecordingHealth())
        server = grpc.aio.server()
        approvals_pb2_grpc.add_ApprovalsServicer_to_server(svc, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                await scenario(approvals_pb2_grpc.ApprovalsStub(ch), svc, audit)
        finally:
            await server.stop(0)
            await svc.close()

    asyncio.run(main())
    return audit


def request(topic: str = "job.7.send.email", tags: tuple[str, ...] = (), **kw: Any) -> Any:
    kw.setdefault("delegation_path", ("agent-a", "agent-b", "agent-c"))
    kw.setdefault("tenant", "acme")
    kw.setdefault("run_id", "run-1")
    return engine.Request(topic=topic, risk_tags=tags, **kw)


async def evaluate(gate: ApprovalGate, req: Any, presented: str = "", did: str = "d") -> Any:
    return await gate.apply(req, POLICY.evaluate(req), presented, did)


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


def test_the_gate_creates_and_binds() -> None:
    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        gate = svc.gate
        req = request(request_id="r-1", labels={"data": "customer-emails"})
        first = await evaluate(gate, req, did="d-1")
        assert (first.decision, first.approval_id != "") == ("require_approval", True)
        a = await stub.GetApproval(S.GetApprovalRequest(approval_id=first.approval_id))
        assert a.status == S.APPROVAL_STATUS_PENDING and a.decision_id == "d-1"
        assert list(a.approvers) == ["data-governance"] and a.rule_id == "approve-external-action"
        assert list(a.derived_tags) == ["external"] and a.labels["data"] == "customer-emails"
        assert a.expires_at.seconds - a.created_at.seconds in (3599, 3600)
        # A retry of the same request id: the same approval, no second "created" event.
        again = await evaluate(gate, req, did="d-2")
        assert again.approval_id == first.approval_id and again.audit["approval_retry"]
        # Presented while pending: the same id back, still require_approval.
        early = await evaluate(gate, req, first.approval_id, "d-3")
        assert (early.decision, early.approval_id) == ("require_approval", first.approval_id)
        assert "still pending" in early.reason
        await stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id=first.approval_id, approve=True, reviewer="alice", reason="ok"))
        # Another action (another run) is not unlocked; it gets an approval of its own.
        other = await evaluate(gate, request(run_id="run-2"), first.approval_id, "d-4")
        assert other.decision == "require_approval" and other.approval_id != first.approval_id
        assert "granted for another action" in other.reason
        # The very same action: allow, once; the rule stays the one that asked.
        used = await evaluate(gate, req, first.approval_id, "d-5")
        assert (used.decision, used.approval_id) == ("allow", first.approval_id)
        assert "approved by alice" in used.reason
        second = await evaluate(gate, req, first.approval_id, "d-6")
        assert second.decision == "require_approval" and "already used" in second.reason
        a = await stub.GetApproval(S.GetApprovalRequest(approval_id=first.approval_id))
        assert a.status == S.APPROVAL_STATUS_CONSUMED
        assert audit.ops() == ["created", "approved", "created", "consumed", "created"]

    serve(scenario)


def test_a_grant_never_overrides_a_deny_and_the_default_has_no_approvers() -> None:
    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        gate = svc.gate
        d = await evaluate(gate, request("job.7.other.thing"))
        assert d.decision == "require_approval" and d.approval_id
        a = await stub.GetApproval(S.GetApprovalRequest(approval_id=d.approval_id))
        assert (a.rule_id, list(a.approvers)) == ("default", [])
        # The approver filter lists approvals without approvers for any group.
        listed = await stub.ListApprovals(S.ListApprovalsRequest(approver="anyone"))
        assert [x.approval_id for x in listed.approvals] == [d.approval_id]
        await stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id=d.approval_id, approve=True, reviewer="bob"))
        deny = await evaluate(gate, request("job.7.export.bulk"), d.approval_id)
        assert (deny.decision, deny.approval_id) == ("deny", "")
        assert deny.audit["approval_use"] == "ignored"
        # Still usable for its own action (the deny did not consume it).
        ok = await evaluate(gate, request("job.7.other.thing"), d.approval_id)
        assert ok.decision == "allow"

    serve(scenario)


def test_rpc_errors() -> None:
    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        nf = grpc.StatusCode.NOT_FOUND
        assert await code_of(stub.GetApproval(S.GetApprovalRequest(approval_id="apv_x"))) == nf
        assert await code_of(stub.WaitApproval(
            S.WaitApprovalRequest(approval_id="apv_x", timeout_seconds=1))) == nf
        assert await code_of(stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id="apv_x", approve=True, reviewer="r"))) == nf
        d = await evaluate(svc.gate, request())
        inv = grpc.StatusCode.INVALID_ARGUMENT
        for bad in (
            S.ResolveApprovalRequest(approval_id=d.approval_id, approve=True, reviewer=""),
            S.ResolveApprovalRequest(approval_id=d.approval_id, approve=False, reviewer="r"),
            S.ResolveApprovalRequest(approval_id="", approve=True, reviewer="r"),
        ):
            assert await code_of(stub.ResolveApproval(bad)) == inv
        assert await code_of(stub.GetApproval(S.GetApprovalRequest(approval_id=""))) == inv
        assert await code_of(stub.ListApprovals(S.ListApprovalsRequest(limit=-1))) == inv
        assert await code_of(stub.ListApprovals(S.ListApprovalsRequest(status=42))) == inv
        assert await code_of(stub.WaitApproval(S.WaitApprovalRequest(
            approval_id=d.approval_id, timeout_seconds=-1))) == inv
        await stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id=d.approval_id, approve=False, reviewer="r", reason="no"))
        assert await code_of(stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id=d.approval_id, approve=True, reviewer="r"))) == (
            grpc.StatusCode.FAILED_PRECONDITION)
        assert audit.ops() == ["created", "denied"]
        denied = [f for k, f in audit.events if f["op"] == "denied"][0]
        assert (denied["reviewer"], denied["reason"], denied["status"]) == ("r", "no", "denied")

    serve(scenario)


def test_wait_ends_at_resolution_timeout_or_deadline() -> None:
    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        d = await evaluate(svc.gate, request())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a = await stub.WaitApproval(S.WaitApprovalRequest(
            approval_id=d.approval_id, timeout_seconds=1))
        # still pending when its 1 s is up: answered then, not at once
        assert a.status == S.APPROVAL_STATUS_PENDING and loop.time() - t0 >= 0.9
        # timeout 0: until just before the call's deadline, answering the pending approval
        # (not DEADLINE_EXCEEDED).
        a = await stub.WaitApproval(S.WaitApprovalRequest(approval_id=d.approval_id),
                                    timeout=0.6)
        assert a.status == S.APPROVAL_STATUS_PENDING

        async def deny_soon() -> None:
            await wait_until_async(lambda: svc.waiting == 1, "the WaitApproval to park")
            await stub.ResolveApproval(S.ResolveApprovalRequest(
                approval_id=d.approval_id, approve=False, reviewer="r", reason="no"))

        task = asyncio.create_task(deny_soon())
        t0 = loop.time()
        a = await stub.WaitApproval(S.WaitApprovalRequest(
            approval_id=d.approval_id, timeout_seconds=30))
        await task
        assert a.status == S.APPROVAL_STATUS_DENIED and loop.time() - t0 < 10  # not its 30 s

    serve(scenario)


class DownStore(MemoryApprovalStore):
    async def create(self, draft: Any) -> Any:
        raise StoreUnavailable("approval store unavailable: ConnectionError: refused")

    async def consume(self, approval_id: str, action_hash: str, decision_id: str) -> Any:
        raise StoreUnavailable("approval store unavailable: ConnectionError: refused")

    async def ping(self) -> None:
        raise StoreUnavailable("approval store unavailable: ConnectionError: refused")


def test_store_down_keeps_require_approval_without_an_id() -> None:
    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        d = await evaluate(svc.gate, request())
        assert (d.decision, d.approval_id) == ("require_approval", "")
        assert d.reason == ("External actions from any agent need approval (approval store "
                            "unavailable: ConnectionError: refused)")
        assert await svc.watch.check() is False
        assert svc.gate.available is False
        fast = await evaluate(svc.gate, request(), "apv_x")
        assert (fast.decision, fast.approval_id) == ("require_approval", "")
        assert "approval store unavailable" in fast.reason
        assert svc._health.changes[-1] == ("proctor.v1.Approvals", False)
        assert audit.ops() == []

    serve(scenario, DownStore())


def test_expiry_is_audited_by_the_watch() -> None:
    class Clock:
        t = 1_800_000_000.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()

    async def scenario(stub: Any, svc: ApprovalsService, audit: RecordingAudit) -> None:
        d = await evaluate(svc.gate, request())
        clock.t += 3601
        assert await svc.watch.check() is True
        assert audit.ops() == ["created", "expired"]
        a = await stub.GetApproval(S.GetApprovalRequest(approval_id=d.approval_id))
        assert a.status == S.APPROVAL_STATUS_EXPIRED
        assert await code_of(stub.ResolveApproval(S.ResolveApprovalRequest(
            approval_id=d.approval_id, approve=True, reviewer="r"))) == (
            grpc.StatusCode.FAILED_PRECONDITION)

    serve(scenario, MemoryApprovalStore(clock=clock))
