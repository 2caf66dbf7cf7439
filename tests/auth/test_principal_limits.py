"""One principal cannot take all of a server's streams or approval waits (issue 20 §8):
over a real `proctor serve --principals`, principal A at --max-streams-per-principal and
--max-approval-waiters-per-principal is refused RESOURCE_EXHAUSTED while B still gets in."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proctor.server.auth.tokens import hash_token
from proctor.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    approvals_pb2,
    approvals_pb2_grpc,
    decisions_pb2,
    decisions_pb2_grpc,
)
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

POLICY = """\
version: v1
rules:
  - id: ask
    match: {topics: ["job.*.send.*"]}
    decision: require_approval
    reason: "sends need approval"
    approval_ttl: 1h
"""
PRINCIPALS = """
principals:
  - id: bot-a
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{a}"]
  - id: bot-b
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{b}"]
"""
A = [("authorization", "Bearer tok-a")]
B = [("authorization", "Bearer tok-b")]
LIMIT = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    d = tmp_path_factory.mktemp("plimits")
    (d / "principals.yaml").write_text(
        PRINCIPALS.format(a=hash_token("tok-a"), b=hash_token("tok-b")))
    (d / "policy.yaml").write_text(POLICY)
    p = start_proctor(d / "policy.yaml", d, "--principals", str(d / "principals.yaml"),
                      "--max-streams-per-principal", str(LIMIT),
                      "--max-approval-waiters-per-principal", str(LIMIT), metrics=True)
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


def _metric(server: ProctorProcess, name: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def _watch(ch: grpc.Channel, md: list[tuple[str, str]]) -> Any:
    """A WatchPolicy stream, open once its first snapshot arrived."""
    it = admin_pb2_grpc.AdminStub(ch).WatchPolicy(
        admin_pb2.WatchPolicyRequest(), metadata=md, timeout=30)
    assert next(it).policy_version
    return it


def test_a_principal_at_its_stream_limit_does_not_block_another(
        server: ProctorProcess) -> None:
    with grpc.insecure_channel(server.address) as ch:
        held = [_watch(ch, A) for _ in range(LIMIT)]
        try:
            with pytest.raises(grpc.RpcError) as e:
                _watch(ch, A)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "'bot-a'" in (e.value.details() or "")
            assert "--max-streams-per-principal" in (e.value.details() or "")
            # every kind of stream counts against the same limit
            request = decisions_pb2.EvaluateRequest(
                topic="job.1.send.email", tenant="acme", delegation_path=["o", "a"])
            stream = decisions_pb2_grpc.DecisionsStub(ch).EvaluateStream(
                iter([request]), metadata=A, timeout=10)
            with pytest.raises(grpc.RpcError) as e:
                next(stream)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            other = _watch(ch, B)  # another principal still gets a stream
            other.cancel()
        finally:
            for it in held:
                it.cancel()
        # closed streams are given back: A opens again
        wait_until(lambda: _opens(ch), "bot-a can open a stream again", timeout=10)


def _opens(ch: grpc.Channel) -> bool:
    try:
        _watch(ch, A).cancel()
        return True
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        return False


def test_a_principal_at_its_waiter_limit_does_not_block_another(
        server: ProctorProcess) -> None:
    with grpc.insecure_channel(server.address) as ch:
        answer = decisions_pb2_grpc.DecisionsStub(ch).Evaluate(
            decisions_pb2.EvaluateRequest(topic="job.1.send.email", tenant="acme",
                                          delegation_path=["o", "a"], run_id="r"),
            metadata=A, timeout=10)
        assert answer.approval_id
        stub = approvals_pb2_grpc.ApprovalsStub(ch)

        def wait(md: list[tuple[str, str]], seconds: int) -> Any:
            return stub.WaitApproval.future(approvals_pb2.WaitApprovalRequest(
                approval_id=answer.approval_id, timeout_seconds=seconds),
                metadata=md, timeout=30)

        held = [wait(A, 25) for _ in range(LIMIT)]
        try:
            wait_until(lambda: _metric(server, "proctor_approval_waiters") == LIMIT,
                       "bot-a's waits are open")
            with pytest.raises(grpc.RpcError) as e:
                wait(A, 1).result()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "'bot-a'" in (e.value.details() or "")
            assert "--max-approval-waiters-per-principal" in (e.value.details() or "")
            # another principal of the same tenant still waits, and gets the pending approval
            assert wait(B, 1).result().approval_id == answer.approval_id
        finally:
            for f in held:
                f.cancel()
