"""The durability check of the Redis layer: a Redis that would forget budgets and
approvals (no persistence, RDB only, eviction on) is refused with a message that says
what to set, unless a flag allows it; at start (`proctor serve` exits) and after a
restart (calls answer UNAVAILABLE until a check passes again)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.store import StoreUnavailable
from proctor.server.redis import Durability, RedisLayer, VolatileRedis
from proctor.server.redis.durability import node_problem
from proctor.v1 import budgets_pb2, budgets_pb2_grpc
from tests.support.ports import free_port
from tests.support.proctor import start_proctor
from tests.support.redis import RedisProcess
from tests.support.wait import wait_until_async

POLICY = """\
version: v1
rules:
  - id: allow-all
    match: {topics: ["**"]}
    decision: allow
    reason: "test"
budgets:
  - {id: calls, unit: calls, limit: 10, scope: fleet}
"""
STRICT, RDB, VOLATILE = Durability(), Durability(allow_rdb=True), Durability(allow_volatile=True)
AOF = {"aof_enabled": "1"}
NO_AOF = {"aof_enabled": "0"}
NO_EVICTION = {"maxmemory": "0", "maxmemory_policy": "noeviction"}


@pytest.mark.parametrize("persistence,memory,save,allowed,refused", [
    (AOF, NO_EVICTION, "", STRICT, ""),
    (AOF, NO_EVICTION, "3600 1", STRICT, ""),
    (NO_AOF, NO_EVICTION, "3600 1", STRICT, "--redis-allow-rdb"),
    (NO_AOF, NO_EVICTION, "3600 1", RDB, ""),
    (NO_AOF, NO_EVICTION, "", STRICT, "appendonly yes"),
    (NO_AOF, NO_EVICTION, "", RDB, "--redis-allow-volatile"),
    (NO_AOF, NO_EVICTION, "", VOLATILE, ""),
    (NO_AOF, NO_EVICTION, PermissionError("NOPERM"), STRICT, "cannot be read"),
    (NO_AOF, NO_EVICTION, PermissionError("NOPERM"), RDB, ""),
    (AOF, {"maxmemory": "1000000", "maxmemory_policy": "allkeys-lru"}, "", STRICT,
     "maxmemory-policy noeviction"),
    (AOF, {"maxmemory": "1000000", "maxmemory_policy": "allkeys-lru"}, "", RDB, "evict"),
    (AOF, {"maxmemory": "0", "maxmemory_policy": "allkeys-lru"}, "", STRICT, ""),
    (AOF, {"maxmemory": "1000000", "maxmemory_policy": "volatile-ttl"}, "", VOLATILE, ""),
])
def test_what_is_refused_and_what_each_flag_allows(
        persistence: dict[str, str], memory: dict[str, str], save: Any, allowed: Durability,
        refused: str) -> None:
    problem = node_problem("127.0.0.1:1", persistence, memory, save, allowed)
    if refused:
        assert refused in problem and "127.0.0.1:1" in problem
    else:
        assert problem == ""


def _redis(tmp_path: Path, name: str, *extra: str, persistent: bool = True) -> RedisProcess:
    return RedisProcess(port=free_port(), workdir=tmp_path / name, extra=extra,
                        persistent=persistent).start()


def _start(url: str, durability: Durability = STRICT) -> None:
    async def main() -> None:
        layer = RedisLayer.from_url(url, durability=durability)
        try:
            await layer.start()
        finally:
            await layer.close()

    asyncio.run(main())


def test_real_redis_servers_are_checked_on_every_setting(tmp_path: Path) -> None:
    servers = [
        _redis(tmp_path, "volatile", persistent=False),
        _redis(tmp_path, "rdb", "--save", "3600 1", persistent=False),
        _redis(tmp_path, "evicting", "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"),
        _redis(tmp_path, "aof"),
    ]
    try:
        volatile, rdb, evicting, aof = (s.url for s in servers)
        for url, durability, refused in (
            (volatile, STRICT, "appendonly yes"), (volatile, RDB, "--redis-allow-volatile"),
            (rdb, STRICT, "--redis-allow-rdb"), (evicting, RDB, "noeviction"),
        ):
            with pytest.raises(VolatileRedis, match=refused):
                _start(url, durability)
        for url, durability in ((volatile, VOLATILE), (rdb, RDB), (evicting, VOLATILE),
                                (aof, STRICT)):
            _start(url, durability)
    finally:
        for s in servers:
            s.stop()


def test_proctor_serve_refuses_a_volatile_redis_and_the_flag_admits_it(
        volatile_redis: Any, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    refused = start_proctor(policy, tmp_path / "refused", "--redis-url", volatile_redis.url,
                            wait=False)
    assert refused.wait(timeout=30) != 0
    log = refused.log()
    assert "appendonly yes" in log and "--redis-allow-volatile" in log
    assert "Traceback" not in log
    admitted = start_proctor(policy, tmp_path / "admitted", "--redis-url", volatile_redis.url,
                             "--redis-allow-volatile")
    try:
        with grpc.insecure_channel(admitted.address) as ch:
            stub = budgets_pb2_grpc.BudgetsStub(ch)
            r = stub.ReserveBudget(budgets_pb2.ReserveBudgetRequest(
                reservation_id="a", unit="calls", amount=1, ttl_seconds=60), timeout=5)
            assert r.granted
    finally:
        assert admitted.stop() == 0


def _refused_gauge() -> float:
    return REGISTRY.get_sample_value("proctor_redis_refused") or 0.0


def test_a_restart_without_persistence_is_refused_until_one_with_it(tmp_path: Path) -> None:
    port = free_port()
    workdir = tmp_path / "redis"
    server = RedisProcess(port=port, workdir=workdir, extra=("--appendfsync", "always")).start()

    async def until(check: Any) -> None:
        async def probed() -> bool:  # the ping runs the durability check
            with contextlib.suppress(StoreUnavailable):
                await store.ping()
            return bool(check())

        await wait_until_async(probed, "the durability check", 10, interval=0.05)

    store = RedisBudgetStore.from_url(server.url, "restart")

    async def main() -> None:
        nonlocal server
        from tests.budgets.conftest import budget

        tokens = (budget("t", "tokens", 10),)
        try:
            await store.start()
            assert (await store.reserve(tokens, "a", "", "", "", "tokens", 1, 60)).granted
            server.stop()
            server = RedisProcess(port=port, workdir=workdir, persistent=False).start()
            await until(lambda: _refused_gauge() == 1)
            with pytest.raises(StoreUnavailable, match="appendonly yes"):
                await store.reserve(tokens, "b", "", "", "", "tokens", 1, 60)
            server.stop()  # and back with its append-only file
            server = RedisProcess(port=port, workdir=workdir, persistent=True).start()
            await until(lambda: _refused_gauge() == 0)
            assert (await store.reserve(tokens, "b", "", "", "", "tokens", 1, 60)).granted
        finally:
            await store.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()
