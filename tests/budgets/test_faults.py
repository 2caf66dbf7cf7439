"""Redis faults: killed, frozen and restarted under the store and the servicer. Fail closed
(UNAVAILABLE within the 1 s bound), recover without a restart, and a retry after a lost
answer never counts twice."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import grpc
import pytest

from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.service import BudgetsService
from proctor.server.budgets.store import StoreUnavailable
from proctor.server.routes import MethodTable
from proctor.v1 import budgets_pb2, budgets_pb2_grpc

from .conftest import budget
from .test_service import POLICY, Holder, RecordingAudit, RecordingHealth

TOKENS = (budget("fleet-tokens", "tokens", 100),)
LIMIT = 1.5  # the 1 s bound, plus scheduling slack on a shared, loaded machine


async def _reserve(store: RedisBudgetStore, rid: str, amount: int = 1) -> Any:
    return await store.reserve(TOKENS, rid, "", "", "", "tokens", amount, 60)


async def _timed_unavailable(coro: Any) -> float:
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await coro
    return time.monotonic() - t0


def test_killed_redis_is_unavailable_then_recovers(redis_proc: Any) -> None:
    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_proc.url, "faults")
        try:
            assert (await _reserve(store, "a")).granted
            redis_proc.kill()
            assert await _timed_unavailable(_reserve(store, "b")) < LIMIT
            assert await _timed_unavailable(store.ping()) < LIMIT
            redis_proc.start()  # same port, empty (no persistence), scripts gone
            r = await _reserve(store, "c", 5)  # same store object: reconnects, re-loads scripts
            assert r.granted and r.budgets[0].reserved == 5
            await store.ping()
        finally:
            await store.close()

    asyncio.run(main())


def test_frozen_redis_times_out_and_a_lost_answer_never_counts_twice(redis_proc: Any) -> None:
    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_proc.url, "faults")
        try:
            assert (await _reserve(store, "warm")).granted
            os.kill(redis_proc.proc.pid, signal.SIGSTOP)
            try:
                # the command reaches Redis but the answer never comes back in time
                assert await _timed_unavailable(_reserve(store, "lost", 7)) < LIMIT
            finally:
                os.kill(redis_proc.proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.2)
            retry = await _reserve(store, "lost", 7)  # the client retries with the same id
            assert retry.granted
            again = await _reserve(store, "lost", 7)
            assert again == retry
            st = (await store.get(TOKENS, "", "", ""))[0]
            assert st.reserved == 1 + 7
        finally:
            await store.close()

    asyncio.run(main())


def test_servicer_fails_closed_and_health_follows_redis(redis_proc: Any) -> None:
    audit, health = RecordingAudit(), RecordingHealth()

    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_proc.url, "faults")
        service = BudgetsService(store, Holder(POLICY), audit, health)
        server = grpc.aio.server()
        table = MethodTable()  # as `proctor serve` routes: ReserveBudget on raw bytes
        service.add_to(table)
        server.add_generic_rpc_handlers([table])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        service.watch.start(0.2)
        req = budgets_pb2.ReserveBudgetRequest(reservation_id="a", unit="tokens", amount=1,
                                               tenant="acme", ttl_seconds=60)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = budgets_pb2_grpc.BudgetsStub(ch)
                assert (await stub.ReserveBudget(req)).granted
                redis_proc.kill()
                t0 = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await stub.ReserveBudget(req)
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - t0 < LIMIT
                assert health.changes[-1] == ("proctor.v1.Budgets", False)
                redis_proc.start()
                deadline = time.monotonic() + 5
                while health.changes[-1][1] is False and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert health.changes[-1] == ("proctor.v1.Budgets", True)  # no traffic needed
                assert (await stub.ReserveBudget(req)).granted
        finally:
            await service.watch.stop()
            await server.stop(None)
            await store.close()

    asyncio.run(main())
    states = [c[1] for c in health.changes]
    assert [v for i, v in enumerate(states) if i == 0 or states[i - 1] != v] == [True, False, True]
    assert any(f.get("code") == "UNAVAILABLE" for _, f in audit.events)


def test_proctor_serve_fails_closed_and_recovers_when_redis_returns(redis_proc: Any,
                                                                    tmp_path: Any) -> None:
    from grpc_health.v1 import health_pb2

    from tests.support.proctor import start_proctor

    from .test_race import POLICY as RACE_POLICY

    policy = tmp_path / "policy.yaml"
    policy.write_text(RACE_POLICY)
    server = start_proctor(policy, tmp_path / "s", "--redis-url", redis_proc.url)
    serving = health_pb2.HealthCheckResponse.SERVING

    def wait_health(want: int) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if server.health("proctor.v1.Budgets") == want:
                return
            time.sleep(0.05)
        raise AssertionError(f"Budgets health never became {want}")

    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = budgets_pb2_grpc.BudgetsStub(ch)

            def reserve(rid: str) -> Any:
                return stub.ReserveBudget(budgets_pb2.ReserveBudgetRequest(
                    reservation_id=rid, unit="calls", amount=1, ttl_seconds=60), timeout=5)

            wait_health(serving)
            assert reserve("a").granted
            redis_proc.kill()
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as e:
                reserve("b")
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - t0 < LIMIT
            wait_health(health_pb2.HealthCheckResponse.NOT_SERVING)
            assert server.health("") == serving  # Evaluate needs no store
            redis_proc.start()
            wait_health(serving)
            assert reserve("b").granted  # same server process, no restart
            assert reserve("b").granted
            got = stub.GetBudget(budgets_pb2.GetBudgetRequest(), timeout=5)
            assert got.budgets[0].reserved == 1  # the retry of "b" did not count twice
    finally:
        server.stop()
