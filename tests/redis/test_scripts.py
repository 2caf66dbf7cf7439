"""The script runner of the Redis layer, on each driver (the lean RespClient on one node,
redis-py on one node, redis-py on a 3-master Cluster): loading with the SHA check, the
NOSCRIPT fallback, pipelined batches in order, error mapping and health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from proctor.server.redis import (
    Call,
    RedisLayer,
    RedisPyDriver,
    RedisUnavailable,
    RespClient,
    Script,
    ScriptError,
    ScriptRunner,
    parse_redis_url,
)
from proctor.server.redis.scripts import LUA_DIR

PUSH_LUA = """\
-- push.lua: append ARGV[1] to the list KEYS[1].
-- KEYS[1]  the list
-- ARGV[1]  the value
-- Replies the list's length after the push; an error reply when ARGV[1] is "boom", or
-- the reply "LOADING ..." when it is "loading" (a transient one).
if ARGV[1] == 'boom' then return redis.error_reply('ERR boom') end
if ARGV[1] == 'loading' then return redis.error_reply('LOADING not now') end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


@pytest.fixture
def push(tmp_path: Path) -> Script:
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "push.lua").write_text(PUSH_LUA)
    return Script.load("test", "push", tmp_path)


@pytest.fixture(params=["resp", "redis-py", "cluster"])
def runner_on(request: pytest.FixtureRequest) -> Callable[[], ScriptRunner]:
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url + "?cluster=1"
    else:
        url = request.getfixturevalue("store_redis").url

    def make() -> ScriptRunner:
        target = parse_redis_url(url)
        if request.param == "resp":
            return ScriptRunner(RespClient(target.url))
        return ScriptRunner(RedisPyDriver(target))

    return make


def run_with(make: Callable[[], ScriptRunner],
             fn: Callable[[ScriptRunner], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        runner = make()
        try:
            return await fn(runner)
        finally:
            await runner.driver.close()

    return asyncio.run(main())


def test_every_script_names_its_keys_argv_and_reply() -> None:
    names = [(p.parent.name, p.stem) for p in sorted(LUA_DIR.glob("*/*.lua")) if p.stem != "lib"]
    assert {g for g, _ in names} >= {"budgets", "approvals", "watch"}
    for group, name in names:
        script = Script.load(group, name)  # refuses a header without KEYS and ARGV
        header = (LUA_DIR / group / f"{name}.lua").read_text().split("\nlocal", 1)[0]
        assert "Repl" in header or "Returns" in header, f"{group}/{name}: no reply format"
        assert len(script.sha) == 40


def test_a_script_without_its_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "bare.lua").write_text("return redis.call('GET', KEYS[1])\n")
    with pytest.raises(ValueError, match="KEYS and ARGV"):
        Script.load("g", "bare", tmp_path)


def test_noscript_is_answered_by_eval_and_the_next_ping_loads_again(
        runner_on: Callable[[], ScriptRunner], push: Script) -> None:
    key = "{t1}:list"

    async def scenario(r: ScriptRunner) -> None:
        r.register([push])
        await r.load()
        await r.execute("DEL", key, key=key)
        assert await r.run(push, (key,), ("a",)) == 1
        await r.each_node("SCRIPT", "FLUSH")  # as a restarted Redis would have it
        assert await r.run(push, (key,), ("b",)) == 2  # NOSCRIPT -> EVAL, same bound
        await r.ping()
        assert all(v == [1] for v in (await r.each_node("SCRIPT", "EXISTS", push.sha)).values())

    run_with(runner_on, scenario)


def test_a_batch_is_pipelined_in_order_with_errors_in_their_slots(
        runner_on: Callable[[], ScriptRunner], push: Script) -> None:
    key = "{t2}:list"

    async def scenario(r: ScriptRunner) -> None:
        r.register([push])
        await r.load()
        await r.execute("DEL", key, key=key)
        values = [f"v{i}" for i in range(50)]
        values[10], values[20] = "boom", "boom"
        got = await r.run_many([Call(push, (key,), (v,)) for v in values])
        assert isinstance(got[10], ScriptError) and "boom" in got[10].message
        assert isinstance(got[20], ScriptError)
        assert [g for i, g in enumerate(got) if i not in (10, 20)] == list(range(1, 49))
        await r.each_node("SCRIPT", "FLUSH")
        again = await r.run_many([Call(push, (key,), (f"w{i}",)) for i in range(5)])
        assert again == [49, 50, 51, 52, 53]  # NOSCRIPT: loaded again, sent again, in order
        listed = await r.execute("LRANGE", key, 0, -1, key=key)
        assert listed[-5:] == [f"w{i}" for i in range(5)]
        assert await r.run_many([]) == []

    run_with(runner_on, scenario)


def test_error_replies_are_mapped(runner_on: Callable[[], ScriptRunner], push: Script) -> None:
    async def scenario(r: ScriptRunner) -> None:
        with pytest.raises(ScriptError, match="boom"):
            await r.run(push, ("{t3}:list",), ("boom",))
        with pytest.raises(RedisUnavailable, match="LOADING|BusyLoading") as e:
            await r.run(push, ("{t3}:list",), ("loading",))
        assert not isinstance(e.value, ScriptError)

    run_with(runner_on, scenario)


def test_a_redis_that_is_gone_is_unavailable_within_the_bound(tmp_path: Path,
                                                              push: Script) -> None:
    from tests.support.redis import start_redis

    r = start_redis(tmp_path / "gone")
    layer = RedisLayer.from_url(r.url)
    layer.register([push])

    async def main() -> None:
        try:
            await layer.start()
            r.kill()
            for call in (layer.ping(), layer.runner.run(push, ("k",), ("a",)),
                         layer.runner.run_many([Call(push, ("k",), ("a",))])):
                t0 = time.monotonic()
                with pytest.raises(RedisUnavailable, match="redis"):
                    await call
                assert time.monotonic() - t0 < 1.5
        finally:
            await layer.close()

    try:
        asyncio.run(main())
    finally:
        r.stop()
