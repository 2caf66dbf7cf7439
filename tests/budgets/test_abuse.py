"""The probe's budget attacks against real `proctor serve` processes (embedded store and
Redis): reservation ids reused with new amounts and tenants, absurd amounts committed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from proctor.v1 import budgets_pb2, budgets_pb2_grpc
from tests.support.proctor import start_proctor

POLICY = """\
version: v1
rules:
  - id: allow-all
    match: {topics: ["**"]}
    decision: allow
    reason: "test"
budgets:
  - {id: fleet-tokens, unit: tokens, limit: 1000000, window: day, scope: fleet}
  - {id: tenant-tokens, unit: tokens, limit: 1000, window: day, scope: tenant}
  - {id: agent-tokens, unit: tokens, limit: 500, scope: agent}
"""


@pytest.fixture(params=["embedded", "redis"])
def stub(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    args = [] if request.param == "embedded" else [
        "--redis-url", request.getfixturevalue("redis_proc").url]
    server = start_proctor(policy, tmp_path / "s", *args)
    channel = grpc.insecure_channel(server.address)
    try:
        yield budgets_pb2_grpc.BudgetsStub(channel)
    finally:
        channel.close()
        assert server.stop() == 0, server.log()


def _reserve(stub: Any, rid: str, tenant: str, amount: int, agent: str = "bot") -> Any:
    return stub.ReserveBudget(budgets_pb2.ReserveBudgetRequest(
        reservation_id=rid, tenant=tenant, agent_id=agent, unit="tokens", amount=amount,
        ttl_seconds=600), timeout=5)


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    code: grpc.StatusCode = e.value.code()
    return code


def test_reused_ids_are_never_granted_without_reserving(stub: Any) -> None:
    first = _reserve(stub, "victim", "acme", 10)
    assert first.granted
    for i in range(50):
        tenant = ("acme", "globex", f"t{i}")[i % 3]
        code = _code(lambda t=tenant, n=i: _reserve(stub, "victim", t, 11 + n))
        assert code == grpc.StatusCode.ALREADY_EXISTS
    for tenant, reserved in (("acme", 10), ("globex", 0), ("t2", 0)):
        got = stub.GetBudget(budgets_pb2.GetBudgetRequest(tenant=tenant, agent_id="bot"),
                             timeout=5)
        by_id = {b.budget_id: b for b in got.budgets}
        assert by_id["fleet-tokens"].reserved == 10  # the first reservation alone
        assert by_id["tenant-tokens"].reserved == reserved
        assert by_id["agent-tokens"].reserved == reserved  # an agent's counter is its tenant's
    assert _reserve(stub, "victim", "acme", 10) == first  # the first request: its answer
    stub.CommitBudget(budgets_pb2.CommitBudgetRequest(reservation_id="victim", actual=7),
                      timeout=5)
    code = _code(lambda: _reserve(stub, "victim", "acme", 10))
    assert code == grpc.StatusCode.ALREADY_EXISTS  # committed: never granted again


def test_an_answer_shows_only_the_requests_own_tenant(stub: Any) -> None:
    assert _reserve(stub, "a1", "acme", 400).granted
    other = _reserve(stub, "g1", "globex", 5)  # the same agent id, another tenant
    assert other.granted
    shown = {b.budget_id: (b.scope_key, b.reserved) for b in other.budgets}
    assert shown == {"fleet-tokens": ("", 405), "tenant-tokens": ("globex", 5),
                     "agent-tokens": ("bot", 5)}


def test_absurd_amounts_are_invalid_and_change_nothing(stub: Any) -> None:
    assert _reserve(stub, "a", "acme", 5).granted
    for actual in (2**53 - 1, 2**63 - 1, 10**12 + 1, -1):
        code = _code(lambda n=actual: stub.CommitBudget(budgets_pb2.CommitBudgetRequest(
            reservation_id="a", actual=n), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    for amount in (2**53 - 1, 10**12 + 1, 0, -5):
        code = _code(lambda n=amount: _reserve(stub, "b", "acme", n))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    got = stub.GetBudget(budgets_pb2.GetBudgetRequest(tenant="acme", agent_id="bot"), timeout=5)
    assert {(b.budget_id, b.used, b.reserved) for b in got.budgets} == {
        ("fleet-tokens", 0, 5), ("tenant-tokens", 0, 5), ("agent-tokens", 0, 5)}
    c = stub.CommitBudget(budgets_pb2.CommitBudgetRequest(reservation_id="a", actual=6),
                          timeout=5)
    assert {b.remaining for b in c.budgets} == {1_000_000 - 6, 1000 - 6, 500 - 6}
