"""Approvals end to end: real `proctor serve` processes, real gRPC, the CLI and the audit.

The seed's accountability chain (DESIGN section 5): agent-c's external send of
customer emails asks for approval; a reviewer denies it from the CLI; `proctor
audit show` answers who asked, through which delegation path, under which
policy version and rule, who resolved it and why. Then the grant workflow:
approved once for exactly one action, expiry, idempotent retries, two servers
on one Redis, error codes, the store going away.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from proctor.client import AsyncProctorClient, DecisionResult, ProctorClient, ProctorError
from proctor.v1 import approvals_pb2, approvals_pb2_grpc
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor
from tests.support.redis import RedisProcess
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"
PATH = ["orchestrator", "agent-b", "agent-c"]
EMAILS = {"data": "customer-emails"}
PII_REASON = "PII export outside approved processor list"

SHORT_TTL_POLICY = """\
version: v1
policy_version: "short-ttl-1"
rules:
  - id: approve-external-action
    match: {topics: ["job.*.send.*"], risk_tags: ["external"]}
    decision: require_approval
    reason: "External actions from any agent need approval"
    approvers: ["data-governance"]
    approval_ttl: 1s
"""


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    server = start_proctor(SEED_POLICY, tmp_path_factory.mktemp("seed"))
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def client(seed: ProctorProcess) -> Iterator[ProctorClient]:
    with ProctorClient(seed.address, timeout=5.0) as c:
        yield c


def send_emails(client: ProctorClient, run_id: str = "run-42", **kw: Any) -> Any:
    kw.setdefault("risk_tags", ["external", "pii"])
    kw.setdefault("labels", EMAILS)
    return client.evaluate("job.42.send.email", delegation_path=PATH, tenant="acme",
                           run_id=run_id, **kw)


def cli(server: ProctorProcess, *args: str) -> Any:
    return run_proctor("approvals", *args, "--server", server.address, cwd=server.workdir)


def audit_show(server: ProctorProcess, decision_id: str, until: str) -> str:
    """`proctor audit show` once the audit holds `until` (the writer flushes in the
    background)."""
    def shown() -> str:
        r = run_proctor("audit", "show", decision_id, "--audit-dir",
                        str(server.workdir / "audit"), cwd=server.workdir)
        out = r.stdout + r.stderr
        return out if r.returncode == 0 and until in out else ""

    return wait_until(shown, f"audit show to show {until!r}", 10, interval=0.2)


def stub(server: ProctorProcess) -> tuple[grpc.Channel, Any]:
    ch = grpc.insecure_channel(server.address)
    return ch, approvals_pb2_grpc.ApprovalsStub(ch)


# -- the seed's accountability chain ----------------------------------------------------------


def test_denied_external_send_and_its_governance_envelope(
    seed: ProctorProcess, client: ProctorClient
) -> None:
    d = send_emails(client, request_id="req-deny-1")
    assert (d.decision, d.rule_id) == ("require_approval", "approve-external-action")
    assert d.approval_id.startswith("apv_")

    listed = cli(seed, "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert d.approval_id in listed.stdout and "ACTION" in listed.stdout
    assert "orchestrator > agent-b > agent-c" in listed.stdout

    r = cli(seed, "deny", d.approval_id, "--reviewer", "alice", "--reason", PII_REASON)
    assert r.returncode == 0, r.stderr
    assert f"{d.approval_id} denied by alice: {PII_REASON}" in r.stdout
    state = client.get_approval(d.approval_id)
    assert (state.status, state.reviewer, state.resolution_reason) == ("denied", "alice",
                                                                       PII_REASON)

    out = audit_show(seed, d.decision_id, "denied")
    lines = dict(
        (line[:16].strip(), line[16:].strip()) for line in out.splitlines() if line.strip()
    )
    assert lines["run_id"] == "run-42"
    assert lines["delegation_path"].startswith("orchestrator -> agent-b -> agent-c")
    assert lines["action"] == "job.42.send.email"
    assert lines["decision"] == "require_approval"
    assert lines["rule"].startswith("approve-external-action")
    assert len(lines["policy_version"]) == 12
    assert lines["approval"] == f"{d.approval_id} denied by alice: {PII_REASON}"

    # Retrying the refused action is told no, with who refused it and why, and opens no
    # new approval: neither with the denied id nor as a plain retry of the same request.
    again = send_emails(client, approval_id=d.approval_id)
    assert again.decision == "deny"
    assert f"denied by alice: {PII_REASON}" in again.reason
    assert again.approval_id == d.approval_id
    retry = send_emails(client, request_id="req-deny-1")
    assert retry.decision == "deny" and retry.approval_id == d.approval_id
    pending = cli(seed, "list", "--tenant", "acme")
    assert d.approval_id not in pending.stdout


def test_approved_once_for_exactly_that_action(
    seed: ProctorProcess, client: ProctorClient
) -> None:
    d = send_emails(client, run_id="run-43")
    r = cli(seed, "approve", d.approval_id, "--reviewer", "bob", "--reason", "processor OK")
    assert r.returncode == 0, r.stderr

    # Another action is not unlocked: another run, another path, a dropped tag, a label.
    for other in (
        {"run_id": "run-44"},
        {"run_id": "run-43", "risk_tags": ["external"]},
        {"run_id": "run-43", "labels": {"data": "all-customers"}},
    ):
        o = send_emails(client, approval_id=d.approval_id, **other)
        assert o.decision == "require_approval", other
        assert "granted for another action" in o.reason
    # Tag order and case do not make it another action.
    ok = send_emails(client, run_id="run-43", risk_tags=[" PII", "External"],
                     approval_id=d.approval_id)
    assert (ok.decision, ok.rule_id, ok.approval_id) == (
        "allow", "approve-external-action", d.approval_id)
    assert "approved by bob" in ok.reason
    second = send_emails(client, run_id="run-43", approval_id=d.approval_id)
    assert second.decision == "require_approval" and "already used" in second.reason
    assert client.get_approval(d.approval_id).status == "consumed"

    # Never overrides a deny: an approved id presented with a bulk export.
    e = send_emails(client, run_id="run-45")
    assert cli(seed, "approve", e.approval_id, "--reviewer", "bob").returncode == 0
    bulk = client.evaluate("job.42.export.bulk", delegation_path=PATH, tenant="acme",
                           run_id="run-45", risk_tags=["external", "bulk-data"],
                           labels=EMAILS, approval_id=e.approval_id)
    assert (bulk.decision, bulk.rule_id) == ("deny", "deny-bulk-export")
    assert client.get_approval(e.approval_id).status == "approved"

    out = audit_show(seed, ok.decision_id, "consumed")
    assert "allow" in out and "bob" in out and "processor OK" in out


def test_idempotent_retry_by_request_id(client: ProctorClient) -> None:
    a = send_emails(client, run_id="run-50", request_id="req-50")
    b = send_emails(client, run_id="run-50", request_id="req-50")
    assert a.approval_id == b.approval_id and a.decision_id != b.decision_id
    c = send_emails(client, run_id="run-50")  # no request id: always new
    assert c.approval_id not in ("", a.approval_id)


def test_client_waits_for_the_reviewer(seed: ProctorProcess, client: ProctorClient) -> None:
    def resolve_soon(approve: bool) -> threading.Thread:
        def run() -> None:
            ch, s = stub(seed)
            with ch:
                pending = wait_until(lambda: s.ListApprovals(approvals_pb2.ListApprovalsRequest(
                    status=approvals_pb2.APPROVAL_STATUS_PENDING, tenant="acme-wait")).approvals,
                    "a pending approval", 10, interval=0.1)
                s.ResolveApproval(approvals_pb2.ResolveApprovalRequest(
                    approval_id=pending[0].approval_id, approve=approve,
                    reviewer="carol", reason="" if approve else PII_REASON))

        t = threading.Thread(target=run)
        t.start()
        return t

    t = resolve_soon(True)
    d = client.evaluate("job.9.send.email", delegation_path=PATH, tenant="acme-wait",
                        risk_tags=["external"], wait_for_approval=20)
    t.join()
    assert (d.decision, d.rule_id) == ("allow", "approve-external-action")

    t = resolve_soon(False)
    d = client.evaluate("job.9.send.email", delegation_path=PATH, tenant="acme-wait",
                        risk_tags=["external"], wait_for_approval=20)
    t.join()
    assert d.decision == "deny" and f"denied by carol: {PII_REASON}" in d.reason
    assert d.approval_id

    pending = client.evaluate("job.9.send.email", delegation_path=PATH, tenant="acme-wait-2",
                              risk_tags=["external"], wait_for_approval=1)
    assert pending.decision == "require_approval" and "still pending" in pending.reason
    state = client.wait_for_approval(pending.approval_id, timeout=0.5)
    assert state.status == "pending"


def test_batch_items_get_approvals_and_the_async_client_waits(
    seed: ProctorProcess, client: ProctorClient
) -> None:
    items = client.evaluate_batch([
        {"topic": "job.3.send.email", "delegation_path": PATH, "risk_tags": ["external"],
         "run_id": "run-90"},
        {"topic": "job.3.delegate.internal", "delegation_path": PATH},
    ])
    first = items[0]
    assert isinstance(first, DecisionResult)
    assert first.decision == "require_approval" and first.approval_id.startswith("apv_")
    assert isinstance(items[1], DecisionResult) and items[1].approval_id == ""

    async def main() -> None:
        async with AsyncProctorClient(seed.address, timeout=5.0) as c:
            waiter = asyncio.create_task(c.wait_for_approval(first.approval_id, timeout=20))
            done, _ = await asyncio.wait({waiter}, timeout=0.3)
            assert not done  # still waiting while the approval is pending
            r = await asyncio.to_thread(cli, seed, "approve", first.approval_id,
                                        "--reviewer", "erin")
            assert r.returncode == 0, r.stderr
            state = await waiter
            assert (state.status, state.reviewer) == ("approved", "erin")
            d = await c.evaluate("job.3.send.email", delegation_path=PATH,
                                 risk_tags=["external"], run_id="run-90",
                                 approval_id=first.approval_id)
            assert d.decision == "allow"

    asyncio.run(main())


def test_bad_ids_and_bad_resolutions(seed: ProctorProcess, client: ProctorClient) -> None:
    ch, s = stub(seed)
    with ch:
        for call in (
            lambda: s.GetApproval(approvals_pb2.GetApprovalRequest(approval_id="apv_nope")),
            lambda: s.WaitApproval(approvals_pb2.WaitApprovalRequest(
                approval_id="apv_nope", timeout_seconds=1)),
            lambda: s.ResolveApproval(approvals_pb2.ResolveApprovalRequest(
                approval_id="apv_nope", approve=True, reviewer="r")),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        d = send_emails(client, run_id="run-60")
        with pytest.raises(grpc.RpcError) as e:
            s.ResolveApproval(approvals_pb2.ResolveApprovalRequest(
                approval_id=d.approval_id, approve=False, reviewer="r", reason=""))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "reason" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            s.ResolveApproval(approvals_pb2.ResolveApprovalRequest(
                approval_id=d.approval_id, approve=True, reviewer=""))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert cli(seed, "approve", d.approval_id, "--reviewer", "r").returncode == 0
    twice = cli(seed, "deny", d.approval_id, "--reviewer", "r", "--reason", "late")
    assert twice.returncode == 1 and "FAILED_PRECONDITION" in twice.stderr
    missing = cli(seed, "approve", "apv_nope", "--reviewer", "r")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    shown = cli(seed, "show", d.approval_id, "--json")
    assert json.loads(shown.stdout)["status"] == "approved"


# -- expiry -----------------------------------------------------------------------------------


def test_expired_approvals_count_as_denied(tmp_path: Path) -> None:
    policy = tmp_path / "short.yaml"
    policy.write_text(SHORT_TTL_POLICY)
    server = start_proctor(policy, tmp_path / "srv")
    try:
        with ProctorClient(server.address, timeout=5.0) as c:
            late = send_emails(c, run_id="run-70")
            used_late = send_emails(c, run_id="run-71")
            # Through the API, not the CLI: a CLI start can outlast the 1 s TTL on a busy host.
            assert c.resolve_approval(used_late.approval_id, True, reviewer="r").status == (
                "approved")
            wait_until(lambda: all(c.get_approval(d.approval_id).status == "expired"
                                   for d in (late, used_late)), "the approvals to expire")
            r = cli(server, "approve", late.approval_id, "--reviewer", "r")
            assert r.returncode == 1 and "expired" in r.stderr
            for d, run in ((late, "run-70"), (used_late, "run-71")):
                o = send_emails(c, run_id=run, approval_id=d.approval_id)
                assert o.decision == "require_approval" and "expired" in o.reason
                assert c.get_approval(d.approval_id).status == "expired"
            out = audit_show(server, late.decision_id, "expired")
            assert "short-ttl-1" in out
    finally:
        assert server.stop() == 0, server.log()


# -- Redis: several servers, one set of approvals; the store going away ------------------------


def test_two_servers_on_one_redis_share_approvals(
    redis_proc: RedisProcess, tmp_path: Path
) -> None:
    a = start_proctor(SEED_POLICY, tmp_path / "a", "--redis-url", redis_proc.url)
    b = start_proctor(SEED_POLICY, tmp_path / "b", "--redis-url", redis_proc.url)
    try:
        with ProctorClient(a.address, timeout=5.0) as ca, \
                ProctorClient(b.address, timeout=5.0) as cb:
            d = send_emails(ca, run_id="run-80", request_id="req-80")
            assert send_emails(cb, run_id="run-80", request_id="req-80").approval_id == (
                d.approval_id)
            assert d.approval_id in cli(b, "list").stdout
            assert cli(b, "approve", d.approval_id, "--reviewer", "dave").returncode == 0
            assert ca.get_approval(d.approval_id).status == "approved"
            assert send_emails(ca, run_id="run-80", approval_id=d.approval_id).allowed
            second = send_emails(cb, run_id="run-80", approval_id=d.approval_id)
            assert second.decision == "require_approval" and "already used" in second.reason

            # Redis goes away: require_approval stays, with no id and a reason that says so.
            redis_proc.stop()
            down = send_emails(ca, run_id="run-81")
            assert (down.decision, down.approval_id) == ("require_approval", "")
            assert down.reason.startswith("External actions from any agent need approval "
                                          "(approval store unavailable:")
            wait_until(lambda: a.health("proctor.v1.Approvals") == (
                health_pb2.HealthCheckResponse.NOT_SERVING), "Approvals NOT_SERVING", 10)
            with pytest.raises(ProctorError) as err:
                cb.get_approval(d.approval_id, timeout=3)
            assert err.value.code == grpc.StatusCode.UNAVAILABLE

            # Redis is back (empty, no scripts loaded): approvals work again within a probe.
            redis_proc.start()
            wait_until(lambda: a.health("proctor.v1.Approvals") == (
                health_pb2.HealthCheckResponse.SERVING), "Approvals SERVING again", 10)
            back = send_emails(ca, run_id="run-82")
            assert back.decision == "require_approval" and back.approval_id.startswith("apv_")
            assert cb.get_approval(back.approval_id).status == "pending"
    finally:
        for s in (a, b):
            assert s.stop() == 0, s.log()
