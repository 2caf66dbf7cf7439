"""Every role against every RPC, over a real `proctor serve --principals` on a gRPC socket.

Allowed calls may still fail for their own reasons (NOT_FOUND, INVALID_ARGUMENT):
what is checked is that they pass authentication and authorization, and that
the others answer PERMISSION_DENIED (a valid principal outside its rights) or
UNAUTHENTICATED (no or bad credential).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from proctor.server.auth.tokens import hash_token
from proctor.v1 import (
    admin_pb2,
    approvals_pb2,
    audit_pb2,
    budgets_pb2,
    decisions_pb2,
    probe_pb2,
)
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"

PRINCIPALS = """
principals:
  - id: planner-bot
    roles: [agent]
    tenants: [acme]
    agents: ["planner", "research-*"]
    tokens: ["{agent}"]
  - id: dana
    roles: [reviewer]
    tenants: [acme]
    groups: [data-governance]
    tokens: ["{reviewer}"]
  - id: audra
    roles: [auditor]
    tenants: [acme]
    tokens: ["{auditor}"]
  - id: root
    roles: [admin]
    tokens: ["{admin}"]
  - id: two-tenants
    roles: [agent]
    tenants: [acme, globex]
    agents: ["*"]
    tokens: ["{multi}"]
"""
TOKENS = {"agent": "tok-agent", "reviewer": "tok-reviewer", "auditor": "tok-auditor",
          "admin": "tok-admin", "multi": "tok-multi"}

UNARY, STREAM_OUT, STREAM_BOTH = "unary", "stream-out", "stream-both"
EVALUATE = decisions_pb2.EvaluateRequest(
    topic="job.1.delegate.internal", tenant="acme", delegation_path=["root", "planner"])

# method -> (kind, request, response type, roles allowed)
RPCS: dict[str, tuple[str, Any, Any, set[str]]] = {
    "/proctor.v1.Decisions/Evaluate": (
        UNARY, EVALUATE, decisions_pb2.EvaluateResponse, {"agent", "admin"}),
    "/proctor.v1.Decisions/EvaluateBatch": (
        UNARY, decisions_pb2.EvaluateBatchRequest(requests=[EVALUATE]),
        decisions_pb2.EvaluateBatchResponse, {"agent", "admin"}),
    "/proctor.v1.Decisions/EvaluateStream": (
        STREAM_BOTH, EVALUATE, decisions_pb2.EvaluateBatchItem, {"agent", "admin"}),
    "/proctor.v1.Budgets/ReserveBudget": (
        UNARY, budgets_pb2.ReserveBudgetRequest(
            reservation_id="r-1", tenant="acme", agent_id="planner", unit="usd", amount=1,
            ttl_seconds=60, allow_unbudgeted=True),
        budgets_pb2.ReserveBudgetResponse, {"agent", "admin"}),
    "/proctor.v1.Budgets/CommitBudget": (
        UNARY, budgets_pb2.CommitBudgetRequest(reservation_id="nope", actual=1),
        budgets_pb2.CommitBudgetResponse, {"agent", "admin"}),
    "/proctor.v1.Budgets/ReleaseBudget": (
        UNARY, budgets_pb2.ReleaseBudgetRequest(reservation_id="nope"),
        budgets_pb2.ReleaseBudgetResponse, {"agent", "admin"}),
    "/proctor.v1.Budgets/GetBudget": (
        UNARY, budgets_pb2.GetBudgetRequest(tenant="acme"),
        budgets_pb2.GetBudgetResponse, {"agent", "admin"}),
    "/proctor.v1.Approvals/GetApproval": (
        UNARY, approvals_pb2.GetApprovalRequest(approval_id="nope"),
        approvals_pb2.Approval, {"agent", "reviewer", "admin"}),
    "/proctor.v1.Approvals/WaitApproval": (
        UNARY, approvals_pb2.WaitApprovalRequest(approval_id="nope", timeout_seconds=1),
        approvals_pb2.Approval, {"agent", "admin"}),
    "/proctor.v1.Approvals/ListApprovals": (
        UNARY, approvals_pb2.ListApprovalsRequest(),
        approvals_pb2.ListApprovalsResponse, {"reviewer", "admin"}),
    "/proctor.v1.Approvals/ResolveApproval": (
        UNARY, approvals_pb2.ResolveApprovalRequest(approval_id="nope", approve=True),
        approvals_pb2.Approval, {"reviewer", "admin"}),
    "/proctor.v1.Audit/StreamDecisions": (
        STREAM_OUT, audit_pb2.StreamDecisionsRequest(),
        audit_pb2.AuditEvent, {"auditor", "admin"}),
    "/proctor.v1.Audit/IngestDecisions": (
        STREAM_BOTH, audit_pb2.IngestBatch(batch_seq=1), audit_pb2.IngestAck,
        {"agent", "admin"}),
    "/proctor.v1.Admin/GetPolicy": (
        UNARY, admin_pb2.GetPolicyRequest(), admin_pb2.GetPolicyResponse, {"admin"}),
    "/proctor.v1.Admin/ReloadPolicy": (
        UNARY, admin_pb2.ReloadPolicyRequest(), admin_pb2.ReloadPolicyResponse, {"admin"}),
    "/proctor.v1.Admin/WatchPolicy": (
        STREAM_OUT, admin_pb2.WatchPolicyRequest(), admin_pb2.PolicySnapshot,
        {"agent", "admin"}),
    "/proctor.v1.Probe/ProbeTopics": (
        UNARY, probe_pb2.ProbeTopicsRequest(tenant="acme", delegation_path=["planner"],
                                            topics=["job.1.send.email"]),
        probe_pb2.ProbeTopicsResponse, {"agent", "admin"}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    d = tmp_path_factory.mktemp("auth")
    f = d / "principals.yaml"
    f.write_text(PRINCIPALS.format(**{k: hash_token(v) for k, v in TOKENS.items()}))
    p = start_proctor(SEED_POLICY, d, "--principals", str(f))
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


@pytest.fixture(scope="module")
def channel(server: ProctorProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def call(channel: grpc.Channel, method: str, token: str | None,
         request: Any = None) -> tuple[grpc.StatusCode, str, list[Any]]:
    """Call `method` as the holder of `token`; (code, details, responses)."""
    kind, default, response_type, _ = RPCS[method]
    request = default if request is None else request
    md = [("authorization", f"Bearer {token}")] if token is not None else []
    ser, de = (lambda m: m.SerializeToString()), response_type.FromString
    try:
        if kind == UNARY:
            out = [channel.unary_unary(method, request_serializer=ser,
                                       response_deserializer=de)(request, metadata=md,
                                                                 timeout=10)]
        elif kind == STREAM_OUT:
            it = channel.unary_stream(method, request_serializer=ser, response_deserializer=de)(
                request, metadata=md, timeout=10)
            out = [next(it, None)]
            it.cancel()
        else:
            it = channel.stream_stream(method, request_serializer=ser,
                                       response_deserializer=de)(
                iter([request]), metadata=md, timeout=10)
            out = [next(it, None)]
            it.cancel()
        return grpc.StatusCode.OK, "", out
    except grpc.RpcError as e:
        return e.code(), e.details() or "", []


@pytest.mark.parametrize("method", sorted(RPCS))
@pytest.mark.parametrize("role", ["agent", "reviewer", "auditor", "admin"])
def test_every_role_against_every_rpc(channel: grpc.Channel, method: str, role: str) -> None:
    code, details, _ = call(channel, method, TOKENS[role])
    if role in RPCS[method][3]:
        assert code not in (grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.UNAUTHENTICATED), (code, details)
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)
        assert "lacks role" in details, details


@pytest.mark.parametrize("method", sorted(RPCS))
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_no_or_bad_credential_is_unauthenticated(channel: grpc.Channel, method: str,
                                                 token: str | None) -> None:
    code, details, _ = call(channel, method, token)
    assert code == grpc.StatusCode.UNAUTHENTICATED, (code, details)


def test_health_and_reflection_need_nothing(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = list(refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert answers and answers[0].list_services_response.service


CROSS_TENANT: list[tuple[str, Callable[[], Any]]] = [
    ("/proctor.v1.Decisions/Evaluate", lambda: decisions_pb2.EvaluateRequest(
        topic="job.1.delegate.internal", tenant="globex", delegation_path=["planner"])),
    ("/proctor.v1.Budgets/ReserveBudget", lambda: budgets_pb2.ReserveBudgetRequest(
        reservation_id="r-x", tenant="globex", agent_id="planner", unit="usd", amount=1,
        ttl_seconds=60, allow_unbudgeted=True)),
    ("/proctor.v1.Budgets/GetBudget", lambda: budgets_pb2.GetBudgetRequest(tenant="globex")),
    ("/proctor.v1.Probe/ProbeTopics", lambda: probe_pb2.ProbeTopicsRequest(
        tenant="globex", delegation_path=["planner"], topics=["job.1.send.email"])),
]


@pytest.mark.parametrize(("method", "make"), CROSS_TENANT, ids=[m for m, _ in CROSS_TENANT])
def test_cross_tenant_is_denied_naming_the_tenant(channel: grpc.Channel, method: str,
                                                  make: Callable[[], Any]) -> None:
    code, details, _ = call(channel, method, TOKENS["agent"], make())
    assert code == grpc.StatusCode.PERMISSION_DENIED, (code, details)
    assert "tenant 'globex'" in details


def test_cross_tenant_audit_and_approvals_are_denied(channel: grpc.Channel) -> None:
    code, details, _ = call(channel, "/proctor.v1.Audit/StreamDecisions", TOKENS["auditor"],
                            audit_pb2.StreamDecisionsRequest(
                                filter=audit_pb2.AuditFilter(tenant="globex")))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "globex" in details
    code, details, _ = call(channel, "/proctor.v1.Approvals/ListApprovals", TOKENS["reviewer"],
                            approvals_pb2.ListApprovalsRequest(tenant="globex"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "globex" in details


def test_acting_agent_outside_the_principals_agents(channel: grpc.Channel) -> None:
    for path in (["planner", "mailer"], ["root"]):
        code, details, _ = call(channel, "/proctor.v1.Decisions/Evaluate", TOKENS["agent"],
                                decisions_pb2.EvaluateRequest(
                                    topic="job.1.delegate.internal", tenant="acme",
                                    delegation_path=path))
        assert code == grpc.StatusCode.PERMISSION_DENIED, (path, code, details)
        assert "may not act as agent" in details
    code, _, _ = call(channel, "/proctor.v1.Decisions/Evaluate", TOKENS["agent"],
                      decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal",
                                                    tenant="acme",
                                                    delegation_path=["research-7"]))
    assert code == grpc.StatusCode.OK


def test_batch_and_stream_are_authorized_item_by_item(channel: grpc.Channel) -> None:
    other = decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal", tenant="globex",
                                          delegation_path=["planner"])
    code, _, out = call(channel, "/proctor.v1.Decisions/EvaluateBatch", TOKENS["agent"],
                        decisions_pb2.EvaluateBatchRequest(requests=[EVALUATE, other]))
    assert code == grpc.StatusCode.OK
    first, second = out[0].results
    assert first.HasField("response")
    assert second.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert "globex" in second.error.message
    code, _, out = call(channel, "/proctor.v1.Decisions/EvaluateStream", TOKENS["agent"], other)
    assert code == grpc.StatusCode.OK
    assert out[0].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]


def test_empty_tenant_is_the_principals_only_one(channel: grpc.Channel) -> None:
    request = decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal",
                                            delegation_path=["planner"], request_id="fill-1")
    code, _, _ = call(channel, "/proctor.v1.Decisions/Evaluate", TOKENS["agent"], request)
    assert code == grpc.StatusCode.OK
    # two tenants: the request must name one
    code, details, _ = call(channel, "/proctor.v1.Decisions/Evaluate", TOKENS["multi"], request)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "no tenant named" in details
    # the auditor (one tenant) reads its tenant's events: the filled-in tenant is there
    stream = channel.unary_stream(
        "/proctor.v1.Audit/StreamDecisions",
        request_serializer=audit_pb2.StreamDecisionsRequest.SerializeToString,
        response_deserializer=audit_pb2.AuditEvent.FromString)
    def with_fill_1() -> list[audit_pb2.AuditEvent]:
        events = list(stream(audit_pb2.StreamDecisionsRequest(), timeout=10,
                             metadata=[("authorization", f"Bearer {TOKENS['auditor']}")]))
        return events if any(e.request_id == "fill-1" for e in events) else []

    # the audit is written behind the answer
    events = wait_until(with_fill_1, "the audit event of fill-1", 10, interval=0.05)
    found = [e for e in events if e.request_id == "fill-1"]
    assert found[0].tenant == "acme"
    assert all(e.tenant == "acme" for e in events)


def test_a_spoofed_reviewer_field_is_refused(channel: grpc.Channel) -> None:
    code, details, _ = call(channel, "/proctor.v1.Approvals/ResolveApproval",
                            TOKENS["reviewer"], approvals_pb2.ResolveApprovalRequest(
                                approval_id="nope", approve=True, reviewer="someone-else"))
    # unknown id answers first when the approval does not exist
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), details
