"""Limits on one caller's answers (docs/limits.md): batch items, explain, GetPolicy's text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proctor.v1 import admin_pb2, decisions_pb2
from tests.support.proctor import ProctorProcess, start_proctor

RULES = 50  # every one matches job.**: explain lists them all, past any small limit


def _policy(extra: str = "") -> str:
    rules = "\n".join(
        f"  - id: allow-r{i:02d}\n    match: {{topics: [\"job.**\"]}}\n    decision: allow\n"
        f"    reason: \"r{i}\"" for i in range(RULES))
    return f"version: v1\n{extra}rules:\n{rules}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    work = tmp_path_factory.mktemp("limits")
    policy = work / "policy.yaml"
    policy.write_text(_policy())
    p = start_proctor(policy, work, "--max-batch-items", "10", "--max-explain-bytes", "40")
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


def _request(explain: bool = True) -> decisions_pb2.EvaluateRequest:
    return decisions_pb2.EvaluateRequest(topic="job.1.x", delegation_path=["a"], explain=explain)


def _call(server: ProctorProcess, method: str, request: object, reply: type) -> object:
    with grpc.insecure_channel(server.address) as ch:
        return reply.FromString(ch.unary_unary(method)(  # type: ignore[attr-defined]
            request.SerializeToString(), timeout=10))  # type: ignore[attr-defined]


def test_explain_lists_what_fits_and_counts_every_match(server: ProctorProcess) -> None:
    answer = _call(server, "/proctor.v1.Decisions/Evaluate", _request(),
                   decisions_pb2.EvaluateResponse)
    assert isinstance(answer, decisions_pb2.EvaluateResponse)
    # 9 bytes an id: four fit 40 bytes; the count is the whole number, in file order.
    assert list(answer.matched_rule_ids) == [f"allow-r{i:02d}" for i in range(4)]
    assert answer.matched_rule_count == RULES
    plain = _call(server, "/proctor.v1.Decisions/Evaluate", _request(explain=False),
                  decisions_pb2.EvaluateResponse)
    assert isinstance(plain, decisions_pb2.EvaluateResponse)
    assert not plain.matched_rule_ids and plain.matched_rule_count == 0


def test_a_batch_shares_one_explain_limit(server: ProctorProcess) -> None:
    batch = decisions_pb2.EvaluateBatchRequest(requests=[_request() for _ in range(3)])
    out = _call(server, "/proctor.v1.Decisions/EvaluateBatch", batch,
                decisions_pb2.EvaluateBatchResponse)
    assert isinstance(out, decisions_pb2.EvaluateBatchResponse)
    listed = [list(r.response.matched_rule_ids) for r in out.results]
    assert listed == [[f"allow-r{i:02d}" for i in range(4)], [], []]
    assert [r.response.matched_rule_count for r in out.results] == [RULES] * 3


def test_a_batch_past_max_batch_items_is_invalid(server: ProctorProcess) -> None:
    batch = decisions_pb2.EvaluateBatchRequest(requests=[_request(False) for _ in range(11)])
    with grpc.insecure_channel(server.address) as ch, pytest.raises(grpc.RpcError) as e:
        ch.unary_unary("/proctor.v1.Decisions/EvaluateBatch")(
            batch.SerializeToString(), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max-batch-items" in str(e.value.details()) and "got 11" in str(e.value.details())
    ten = decisions_pb2.EvaluateBatchRequest(requests=[_request(False) for _ in range(10)])
    out = _call(server, "/proctor.v1.Decisions/EvaluateBatch", ten,
                decisions_pb2.EvaluateBatchResponse)
    assert isinstance(out, decisions_pb2.EvaluateBatchResponse) and len(out.results) == 10


def test_get_policy_counts_the_text_in_bytes(tmp_path: Path) -> None:
    # 400,000 characters (under 768 Ki), 1.2 MB of UTF-8: past the 1 MiB message limit.
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy("# " + "€" * 400_000 + "\n"), encoding="utf-8")
    p = start_proctor(policy, tmp_path)
    try:
        answer = _call(p, "/proctor.v1.Admin/GetPolicy", admin_pb2.GetPolicyRequest(),
                       admin_pb2.GetPolicyResponse)
        assert isinstance(answer, admin_pb2.GetPolicyResponse)
        assert answer.text == "" and answer.rule_count == RULES and answer.source
        # A small text is echoed as it is.
        policy.write_text(_policy(), encoding="utf-8")
        with grpc.insecure_channel(p.address) as ch:
            ch.unary_unary("/proctor.v1.Admin/ReloadPolicy")(
                admin_pb2.ReloadPolicyRequest().SerializeToString(), timeout=30)
        answer = _call(p, "/proctor.v1.Admin/GetPolicy", admin_pb2.GetPolicyRequest(),
                       admin_pb2.GetPolicyResponse)
        assert isinstance(answer, admin_pb2.GetPolicyResponse)
        assert answer.text == _policy()
    finally:
        assert p.stop() == 0, p.log()
