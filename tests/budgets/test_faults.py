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
from prometheus_client import REGISTRY

from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.service import BudgetsService
from proctor.server.budgets.store import StoreUnavailable
from proctor.server.redis import Durability
from proctor.server.routes import MethodTable
from proctor.v1 import budgets_pb2, budgets_pb2_grpc
from tests.support.wait import wait_until, wait_until_async

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


async def _ping_until_up(store: RedisBudgetStore) -> None:
    """The health probe, again until it passes (a connection the restart cut fails once)."""

    async def up() -> bool:
        await store.ping()
        return True

    await wait_until_async(up, "the store's ping to pass", 10, interval=0.05,
                           ignore=(StoreUnavailable,))


def _lost() -> float:
    return REGISTRY.get_sample_value("proctor_redis_data_lost_total") or 0.0


def _restarts() -> float:
    return REGISTRY.get_sample_value("proctor_redis_restarts_total") or 0.0


def test_killed_redis_is_unavailable_then_recovers_and_the_loss_is_counted(
        volatile_redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        store = RedisBudgetStore.from_url(volatile_redis.url, "faults",
                                          durability=Durability(allow_volatile=True))
        try:
            await store.start()
            assert (await _reserve(store, "a")).granted
            lost, restarts = _lost(), _restarts()
            volatile_redis.kill()
            assert await _timed_unavailable(_reserve(store, "b")) < LIMIT
            assert await _timed_unavailable(store.ping()) < LIMIT
            volatile_redis.start()  # same port, empty (no persistence), scripts gone
            r = await _reserve(store, "c", 5)  # same store object: reconnects, re-loads scripts
            assert r.granted and r.budgets[0].reserved == 5  # "a" is gone with the data
            await _ping_until_up(store)  # the health probe sees the restart, and the loss
            assert (_restarts(), _lost()) == (restarts + 1, lost + 1)
            assert any("LOST Proctor's data" in m for m in caplog.messages)
            await store.ping()
            assert (_restarts(), _lost()) == (restarts + 1, lost + 1)  # counted once
        finally:
            await store.close()

    asyncio.run(main())


def test_a_restart_that_keeps_the_data_is_not_a_loss(tmp_path: Any) -> None:
    from tests.support.ports import free_port
    from tests.support.redis import RedisProcess

    durable = RedisProcess(port=free_port(), workdir=tmp_path / "redis",
                           extra=("--appendfsync", "always")).start()

    async def main() -> None:
        store = RedisBudgetStore.from_url(durable.url, "kept")
        try:
            await store.start()
            assert (await _reserve(store, "a", 3)).granted
            lost, restarts = _lost(), _restarts()
            durable.kill()
            durable.start()
            await _ping_until_up(store)
            assert (_restarts(), _lost()) == (restarts + 1, lost)
            st = (await store.get(TOKENS, "", "", ""))[0]
            assert st.reserved == 3  # the append-only file kept it
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        durable.stop()


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
            await _ping_until_up(store)
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
    # (redis_proc keeps an append-only file: after the restart "a" may or may not be there,
    # and either way its retry is granted)
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
                await wait_until_async(lambda: health.changes[-1][1] is not False,
                                       "Budgets health back", 10)
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


def test_proctor_serve_fails_closed_and_recovers_when_redis_returns(tmp_path: Any) -> None:
    from grpc_health.v1 import health_pb2

    from tests.support.ports import free_port
    from tests.support.proctor import start_proctor
    from tests.support.redis import RedisProcess

    from .test_race import POLICY as RACE_POLICY

    redis_proc = RedisProcess(port=free_port(), workdir=tmp_path / "redis",
                              extra=("--appendfsync", "always")).start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(RACE_POLICY)
    server = start_proctor(policy, tmp_path / "s", "--redis-url", redis_proc.url)
    serving = health_pb2.HealthCheckResponse.SERVING

    def wait_health(want: int) -> None:
        wait_until(lambda: server.health("proctor.v1.Budgets") == want,
                   f"Budgets health {want}", 10)

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
            assert got.budgets[0].reserved == 2  # "a" kept, and the retry of "b" once
    finally:
        server.stop()
        redis_proc.stop()
