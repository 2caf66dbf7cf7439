"""Approvals between principals and the audit's `caller`, over a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from proctor.server.auth.tokens import hash_token
from proctor.v1 import approvals_pb2, audit_pb2, decisions_pb2
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor
from tests.support.wait import wait_until

POLICY = """
version: v1
rules:
  - id: pii-needs-governance
    match: {topics: ["job.*.read.pii"]}
    decision: require_approval
    approvers: [data-governance]
    reason: "PII needs data governance"
  - id: send-needs-anyone
    match: {topics: ["job.*.send.*"]}
    decision: require_approval
    reason: "sending needs a look"
"""

PRINCIPALS = """
principals:
  - id: bot
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{bot}"]
  - id: dana
    roles: [reviewer]
    tenants: [acme]
    groups: [data-governance]
    tokens: ["{dana}"]
  - id: rex
    roles: [reviewer]
    tenants: [acme]
    groups: [marketing]
    tokens: ["{rex}"]
  - id: selfie
    roles: [agent, reviewer]
    tenants: [acme]
    agents: ["*"]
    groups: [data-governance]
    tokens: ["{selfie}"]
  - id: aud
    roles: [auditor]
    tenants: ["*"]
    tokens: ["{aud}"]
"""
NAMES = ("bot", "dana", "rex", "selfie", "aud")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    d = tmp_path_factory.mktemp("approvals-auth")
    (d / "policy.yaml").write_text(POLICY)
    (d / "principals.yaml").write_text(
        PRINCIPALS.format(**{n: hash_token(f"tok-{n}") for n in NAMES}))
    p = start_proctor(d / "policy.yaml", d, "--principals", str(d / "principals.yaml"))
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


@pytest.fixture(scope="module")
def channel(server: ProctorProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


def _md(who: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer tok-{who}")]


def _ask(channel: grpc.Channel, who: str, topic: str, request_id: str) -> str:
    evaluate = channel.unary_unary(
        "/proctor.v1.Decisions/Evaluate",
        request_serializer=decisions_pb2.EvaluateRequest.SerializeToString,
        response_deserializer=decisions_pb2.EvaluateResponse.FromString)
    out = evaluate(decisions_pb2.EvaluateRequest(
        topic=topic, delegation_path=["bot"], request_id=request_id), metadata=_md(who),
        timeout=10)
    assert out.approval_id, out
    return str(out.approval_id)


def _resolve(channel: grpc.Channel, who: str, approval_id: str,
             reviewer: str = "") -> tuple[grpc.StatusCode, str, Any]:
    resolve = channel.unary_unary(
        "/proctor.v1.Approvals/ResolveApproval",
        request_serializer=approvals_pb2.ResolveApprovalRequest.SerializeToString,
        response_deserializer=approvals_pb2.Approval.FromString)
    try:
        a = resolve(approvals_pb2.ResolveApprovalRequest(
            approval_id=approval_id, approve=True, reviewer=reviewer, reason="ok"),
            metadata=_md(who), timeout=10)
        return grpc.StatusCode.OK, "", a
    except grpc.RpcError as e:
        return e.code(), e.details() or "", None


def test_no_self_approval(channel: grpc.Channel) -> None:
    aid = _ask(channel, "selfie", "job.1.send.email", "self-1")
    code, details, _ = _resolve(channel, "selfie", aid)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "self approval" in details
    code, _, a = _resolve(channel, "dana", aid)
    assert code == grpc.StatusCode.OK and a.reviewer == "dana"


def test_the_rules_approvers_groups(channel: grpc.Channel) -> None:
    aid = _ask(channel, "bot", "job.1.read.pii", "pii-1")
    code, details, _ = _resolve(channel, "rex", aid)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "data-governance" in details and "marketing" in details
    code, _, a = _resolve(channel, "dana", aid)
    assert code == grpc.StatusCode.OK and a.reviewer == "dana"


def test_the_reviewer_is_the_principal_never_the_field(channel: grpc.Channel) -> None:
    aid = _ask(channel, "bot", "job.1.send.fax", "spoof-1")
    code, details, _ = _resolve(channel, "rex", aid, reviewer="dana")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'dana'" in details
    code, _, a = _resolve(channel, "rex", aid, reviewer="rex")
    assert code == grpc.StatusCode.OK and a.reviewer == "rex"


def test_every_audit_event_names_its_caller(channel: grpc.Channel) -> None:
    aid = _ask(channel, "bot", "job.1.send.sms", "caller-1")
    assert _resolve(channel, "dana", aid)[0] == grpc.StatusCode.OK
    stream = channel.unary_stream(
        "/proctor.v1.Audit/StreamDecisions",
        request_serializer=audit_pb2.StreamDecisionsRequest.SerializeToString,
        response_deserializer=audit_pb2.AuditEvent.FromString)

    def with_the_approval() -> list[dict[str, Any]]:
        records = [json.loads(e.record_json) for e in stream(
            audit_pb2.StreamDecisionsRequest(), metadata=_md("aud"), timeout=10)]
        mine = [r for r in records if r.get("approval_id") == aid]
        ops = {(r["kind"], r.get("op", r.get("outcome"))) for r in mine}
        return records if ("approval", "approved") in ops else []

    # the audit is written behind the answers
    records = wait_until(with_the_approval, "the approval's audit events", 20, interval=0.05)
    mine = [r for r in records if r.get("approval_id") == aid]
    by_step = {(r["kind"], r.get("op", "")): r["caller"] for r in mine}
    assert by_step[("decision", "")] == {"id": "bot", "method": "token"}
    assert by_step[("approval", "created")] == {"id": "bot", "method": "token"}
    assert by_step[("approval", "approved")] == {"id": "dana", "method": "token"}
    assert all("caller" in r for r in records), [r for r in records if "caller" not in r]


def test_audit_show_names_who_asked_and_who_resolved(server: ProctorProcess,
                                                    channel: grpc.Channel) -> None:
    evaluate = channel.unary_unary(
        "/proctor.v1.Decisions/Evaluate",
        request_serializer=decisions_pb2.EvaluateRequest.SerializeToString,
        response_deserializer=decisions_pb2.EvaluateResponse.FromString)
    out = evaluate(decisions_pb2.EvaluateRequest(
        topic="job.9.send.mail", delegation_path=["bot"], request_id="show-1"),
        metadata=_md("bot"), timeout=10)
    assert _resolve(channel, "dana", out.approval_id)[0] == grpc.StatusCode.OK

    def shown() -> str:
        r = run_proctor("audit", "show", out.decision_id, "--audit-dir",
                        str(server.workdir / "audit"), cwd=server.workdir)
        return r.stdout if r.returncode == 0 and "dana (token)" in r.stdout else ""

    text = wait_until(shown, "audit show to name the reviewer", 20, interval=0.2)
    rows = {line[:16].strip(): line[16:].strip() for line in text.splitlines()}
    assert rows["asked_by"] == "bot (token)"
    assert rows["resolved_by"] == "dana (token)"
