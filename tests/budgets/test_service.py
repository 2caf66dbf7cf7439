"""The Budgets servicer over real gRPC (in-process grpc.aio server): answers, error codes,
audit records, policy reload and health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from proctor import engine
from proctor.server.budgets.memory import MemoryBudgetStore
from proctor.server.budgets.service import BudgetsService
from proctor.server.budgets.store import BudgetStore
from proctor.server.routes import MethodTable
from proctor.v1 import budgets_pb2, budgets_pb2_grpc

from .conftest import FakeClock

POLICY = """\
version: v1
rules: []
budgets:
  - {id: fleet-tokens, unit: tokens, limit: 100, window: day, scope: fleet}
  - {id: tenant-tokens, unit: tokens, limit: 10, window: 30s, scope: tenant}
  - {id: slots, unit: agents, limit: 1, kind: concurrency, scope: agent}
"""


class Holder:
    def __init__(self, text: str) -> None:
        self.current = engine.compile_policy(text)


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, fields))


class RecordingHealth:
    def __init__(self) -> None:
        self.changes: list[tuple[str, bool]] = []

    def set_service(self, name: str, serving: bool) -> None:
        self.changes.append((name, serving))


Scenario = Callable[[budgets_pb2_grpc.BudgetsStub, BudgetsService, Any], Awaitable[None]]


def serve(scenario: Scenario, store_factory: Callable[[], BudgetStore] | None = None,
          holder: Holder | None = None) -> tuple[RecordingAudit, RecordingHealth]:
    audit, health = RecordingAudit(), RecordingHealth()

    async def main() -> None:
        store = store_factory() if store_factory else MemoryBudgetStore(clock=FakeClock())
        service = BudgetsService(store, holder or Holder(POLICY), audit, health)
        server = grpc.aio.server()
        table = MethodTable()  # as `proctor serve` routes: ReserveBudget on raw bytes
        service.add_to(table)
        server.add_generic_rpc_handlers([table])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = budgets_pb2_grpc.BudgetsStub(ch)
                stub.channel = ch  # for calls the stub cannot make (raw bytes)
                await scenario(stub, service, store)
        finally:
            await server.stop(None)
            await store.close()

    asyncio.run(main())
    return audit, health


def reserve_req(rid: str, amount: int = 1, unit: str = "tokens", **kw: Any) -> Any:
    fields = {"tenant": "acme", "agent_id": "a1", "run_id": "r1", "ttl_seconds": 60, **kw}
    return budgets_pb2.ReserveBudgetRequest(reservation_id=rid, unit=unit, amount=amount, **fields)


def test_reserve_commit_release_get_over_grpc() -> None:
    async def scenario(stub: Any, service: Any, store: Any) -> None:
        r = await stub.ReserveBudget(reserve_req("a", 6))
        assert r.granted and r.refused_by == "" and r.reservation_id == "a"
        assert r.expires_at.seconds > 0
        fleet, tenant = r.budgets
        assert (fleet.budget_id, fleet.scope, fleet.scope_key) == ("fleet-tokens", "fleet", "")
        assert fleet.kind == budgets_pb2.BUDGET_KIND_SPEND and fleet.window == "day"
        assert (tenant.limit, tenant.reserved, tenant.remaining) == (10, 6, 4)
        assert tenant.window == "30s" and tenant.window_resets_at.seconds % 30 == 0
        refused = await stub.ReserveBudget(reserve_req("b", 5))
        assert not refused.granted and refused.refused_by == "tenant-tokens"
        c = await stub.CommitBudget(budgets_pb2.CommitBudgetRequest(reservation_id="a", actual=12))
        assert c.over and c.budgets[1].remaining == -2 and c.budgets[1].over
        rel = await stub.ReleaseBudget(budgets_pb2.ReleaseBudgetRequest(reservation_id="a"))
        assert rel.budgets[1].used == 12
        lease = await stub.ReserveBudget(reserve_req("l", 1, unit="agents"))
        assert lease.granted and lease.budgets[0].kind == budgets_pb2.BUDGET_KIND_CONCURRENCY
        assert not lease.budgets[0].HasField("window_resets_at")
        got = await stub.GetBudget(budgets_pb2.GetBudgetRequest(tenant="acme", agent_id="a1"))
        assert [(b.budget_id, b.used, b.reserved) for b in got.budgets] == [
            ("fleet-tokens", 12, 0), ("tenant-tokens", 12, 0), ("slots", 0, 1)]

    audit, health = serve(scenario)
    ops = [(f["op"], f["outcome"]) for kind, f in audit.events if kind == "budget"]
    assert ops == [("reserve", "granted"), ("reserve", "refused"), ("commit", "over"),
                   ("release", "released"), ("reserve", "granted"), ("get", "ok")]
    assert audit.events[1][1]["refused_by"] == "tenant-tokens"
    assert health.changes == [("proctor.v1.Budgets", True)]


@pytest.mark.parametrize("call,code,word", [
    ("reserve_zero", grpc.StatusCode.INVALID_ARGUMENT, "amount"),
    ("reserve_unit", grpc.StatusCode.INVALID_ARGUMENT, "unit"),
    ("reserve_ttl", grpc.StatusCode.INVALID_ARGUMENT, "ttl_seconds"),
    ("reserve_no_tenant", grpc.StatusCode.INVALID_ARGUMENT, "tenant"),
    ("reserve_empty_id", grpc.StatusCode.INVALID_ARGUMENT, "reservation_id"),
    ("commit_negative", grpc.StatusCode.INVALID_ARGUMENT, "actual"),
    ("commit_unknown", grpc.StatusCode.NOT_FOUND, "nope"),
    ("release_unknown", grpc.StatusCode.NOT_FOUND, "nope"),
    ("commit_lease", grpc.StatusCode.FAILED_PRECONDITION, "lease"),
    ("get_unknown", grpc.StatusCode.INVALID_ARGUMENT, "budget_id"),
])
def test_error_codes(call: str, code: grpc.StatusCode, word: str) -> None:
    async def scenario(stub: Any, service: Any, store: Any) -> None:
        await stub.ReserveBudget(reserve_req("lease", 1, unit="agents"))
        before = repr(store._s)
        calls = {
            "reserve_zero": lambda: stub.ReserveBudget(reserve_req("x", 0)),
            "reserve_unit": lambda: stub.ReserveBudget(reserve_req("x", 1, unit="tokenz")),
            "reserve_ttl": lambda: stub.ReserveBudget(reserve_req("x", 1, ttl_seconds=86401)),
            "reserve_no_tenant": lambda: stub.ReserveBudget(reserve_req("x", 1, tenant="")),
            "reserve_empty_id": lambda: stub.ReserveBudget(reserve_req("", 1)),
            "commit_negative": lambda: stub.CommitBudget(
                budgets_pb2.CommitBudgetRequest(reservation_id="lease", actual=-1)),
            "commit_unknown": lambda: stub.CommitBudget(
                budgets_pb2.CommitBudgetRequest(reservation_id="nope", actual=1)),
            "release_unknown": lambda: stub.ReleaseBudget(
                budgets_pb2.ReleaseBudgetRequest(reservation_id="nope")),
            "commit_lease": lambda: stub.CommitBudget(
                budgets_pb2.CommitBudgetRequest(reservation_id="lease", actual=1)),
            "get_unknown": lambda: stub.GetBudget(budgets_pb2.GetBudgetRequest(budget_id="zz")),
        }
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await calls[call]()
        assert e.value.code() == code and word in e.value.details()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert repr(store._s) == before

    audit, _ = serve(scenario)
    assert audit.events[-1][1]["code"] == code.name


def test_budgets_follow_a_policy_reload() -> None:
    holder = Holder(POLICY)

    async def scenario(stub: Any, service: Any, store: Any) -> None:
        assert not (await stub.ReserveBudget(reserve_req("a", 11))).granted
        holder.current = engine.compile_policy(POLICY.replace("limit: 10,", "limit: 20,"))
        r = await stub.ReserveBudget(reserve_req("b", 11))
        assert r.granted and r.budgets[1].limit == 20
        holder.current = engine.compile_policy("version: v1\nrules: []\n")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await stub.ReserveBudget(reserve_req("c", 1))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        c = await stub.CommitBudget(budgets_pb2.CommitBudgetRequest(reservation_id="b", actual=3))
        assert c.budgets[1].used == 3  # settles where it was reserved, after the budget left

    serve(scenario, holder=holder)


def test_bytes_that_are_not_a_reserve_request_are_invalid_argument() -> None:
    """ReserveBudget is served on raw bytes: upb's refusal becomes INVALID_ARGUMENT, and
    nothing is reserved."""
    async def scenario(stub: Any, service: Any, store: Any) -> None:
        before = repr(store._s)
        raw = stub.channel.unary_unary("/proctor.v1.Budgets/ReserveBudget")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await raw(b"\xff\xff\xff")  # a truncated varint tag
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a ReserveBudgetRequest" in e.value.details()
        assert repr(store._s) == before
        assert (await stub.ReserveBudget(reserve_req("ok", 1))).granted  # still serving

    serve(scenario)
