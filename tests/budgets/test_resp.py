"""The lean Redis client of the budget store (server/budgets/resp.py): replies of every
RESP type, pipelined callers matched to their replies, errors, the per-command bound,
reconnecting, AUTH and SELECT, and the choice of client per URL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import redis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from proctor.server.budgets.redis_store import RedisBudgetStore, connect_store_client
from proctor.server.budgets.resp import RespClient, _Incomplete, _parse, pack
from proctor.server.budgets.store import Counter
from tests.support.redis import start_redis

from .conftest import budget

TOKENS = (budget("fleet-tokens", "tokens", 100),)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_pack_and_parse_every_reply_type() -> None:
    assert pack(("SET", "k", 5, b"\x00v")) == (
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n$2\r\n\x00v\r\n")
    assert pack(("ECHO", "é")) == b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n"
    buf = bytearray(b"+OK\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n*2\r\n$1\r\nx\r\n*1\r\n:1\r\n"
                    b"*-1\r\n-ERR bad\r\n")
    pos, got = 0, []
    while pos < len(buf):
        value, pos = _parse(buf, pos)
        got.append(value)
    assert got[:6] == ["OK", -7, "a\r\n", None, ["x", [1]], None]
    assert isinstance(got[6], rx.ResponseError) and str(got[6]) == "ERR bad"
    assert isinstance(_parse(bytearray(b"-NOSCRIPT No matching\r\n"), 0)[0], rx.NoScriptError)
    for partial in (b"$5\r\nab", b"*2\r\n:1\r\n", b"+O"):
        with pytest.raises(_Incomplete):
            _parse(bytearray(partial), 0)


def test_commands_pipelined_replies_in_order_split_anywhere(redis_proc: Any) -> None:
    async def main() -> None:
        c = RespClient(redis_proc.url)
        try:
            assert await c.ping()
            sha = await c.script_load("return ARGV[1] .. KEYS[1]")
            big = "x" * 200_000  # a reply that arrives in many reads
            replies = await asyncio.gather(*(
                c.evalsha(sha, 1, str(i), big if i % 50 == 0 else f"v{i}") for i in range(500)
            ))
            assert replies == [(big if i % 50 == 0 else f"v{i}") + str(i) for i in range(500)]
            assert await c.execute("INCRBY", "n", 3) == 3
            assert await c.eval("return {1, 'a', {false}}", 0) == [1, "a", [None]]
            with pytest.raises(rx.NoScriptError):
                await c.evalsha("0" * 40, 0)
            with pytest.raises(rx.ResponseError, match="user_script"):
                await c.eval("return redis.error_reply('boom user_script')", 0)
            assert await c.ping()  # errors leave the connection usable
        finally:
            await c.aclose()

    run(main())


def test_a_command_is_bounded_and_the_connection_recovers(redis_proc: Any) -> None:
    async def main() -> None:
        c = RespClient(redis_proc.url, timeout=0.3)
        try:
            assert await c.ping()
            os.kill(redis_proc.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                results = await asyncio.gather(c.ping(), c.execute("INCR", "k"),
                                               return_exceptions=True)
                assert time.monotonic() - t0 < 0.8
                assert all(isinstance(r, rx.TimeoutError) for r in results)
            finally:
                os.kill(redis_proc.proc.pid, signal.SIGCONT)
            assert await c.execute("INCR", "k") == 2  # a new connection; the lost INCR ran
            redis_proc.kill()
            with pytest.raises(rx.ConnectionError):
                await c.ping()
            t0 = time.monotonic()
            with pytest.raises(rx.ConnectionError):
                await c.ping()  # nothing listens: refused at once
            assert time.monotonic() - t0 < 0.8
            redis_proc.start()
            assert await c.ping()
        finally:
            await c.aclose()

    run(main())


def test_a_caller_that_gives_up_leaves_the_others_their_replies(redis_proc: Any) -> None:
    async def main() -> None:
        c = RespClient(redis_proc.url)
        try:
            slow = asyncio.ensure_future(c.eval(
                "local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + 200000 "
                "while true do t = redis.call('TIME') "
                "if t[1] * 1e6 + t[2] > e then break end end return 'slow'", 0))
            after = asyncio.ensure_future(c.execute("ECHO", "after"))
            await asyncio.sleep(0.05)
            slow.cancel()
            assert await after == "after"
            assert await c.execute("ECHO", "next") == "next"
        finally:
            await c.aclose()

    run(main())


def test_an_idle_loop_reads_the_reply_off_the_socket_and_never_waits_long(
    redis_proc: Any,
) -> None:
    async def main() -> None:
        c = RespClient(redis_proc.url)
        try:
            assert await c.ping()
            # Nothing else pending: the reply is read before execute() returns (Redis
            # answers a PING well within IDLE_WAIT, at least once in 50 tries on any host).
            done = []
            for _ in range(50):
                fut = c.execute("ECHO", "x")
                done.append(fut.done())
                assert await fut == "x"
            assert any(done)
            big = "y" * 300_000  # a reply that arrives in many reads
            assert await c.execute("ECHO", big) == big
            # A callback waiting on the loop: the reply comes through the loop instead.
            asyncio.get_running_loop().call_soon(lambda: None)
            fut = c.execute("ECHO", "busy")
            assert not fut.done()
            assert await fut == "busy"
            # A slow reply holds the loop IDLE_WAIT at most, then arrives through it.
            t0 = time.perf_counter()
            fut = c.eval(
                "local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + 50000 "
                "while true do t = redis.call('TIME') "
                "if t[1] * 1e6 + t[2] > e then break end end return 'slow'", 0)
            held = time.perf_counter() - t0
            assert not fut.done() and held < 0.02
            assert await fut == "slow"
            assert await c.execute("ECHO", "after") == "after"
        finally:
            await c.aclose()

    run(main())


def test_the_reserve_command_from_cached_parts_is_what_pack_makes() -> None:
    store = RedisBudgetStore(RespClient("redis://127.0.0.1:1/0"), "fleet-é")
    sha = store._scripts["reserve"].sha
    one = (Counter("b", "tokens", "fleet", "", "spend", 10, "day", 0, "day"),)
    two = (*one, Counter("bé", "usd", "run", "r\u00e9-\U0001f600", "concurrency", 2**53 - 1,
                         "none", 0, "none"))
    for rid, amount, ttl_ms, counters in (
        ("r-1", 1, 60_000, one),
        ("ré\u00e9-\U0001f600", 2**53 - 1, 86_400_000, two),
    ):
        _, args, head, tail = store._plan(counters)
        got = store._reserve_packed(head, rid, amount, ttl_ms, tail)
        assert got == pack(("EVALSHA", sha, 1, store.prefix, rid, amount, ttl_ms,
                            store._margin_ms, len(counters), *args))


def test_auth_and_database_from_the_url(tmp_path: Any) -> None:
    r = start_redis(tmp_path / "auth")  # a private server: its password is ours to set
    try:
        redis.Redis(port=r.port).config_set("requirepass", "s3cret")
        async def main() -> None:
            good = RespClient(f"redis://:s3cret@127.0.0.1:{r.port}/3")
            try:
                await good.execute("SET", "where", "db3")
            finally:
                await good.aclose()
            bad = RespClient(f"redis://:wrong@127.0.0.1:{r.port}/0")
            with pytest.raises(rx.ConnectionError):
                await bad.ping()
            await bad.aclose()

        run(main())
        plain = redis.Redis(port=r.port, password="s3cret", db=3, decode_responses=True)
        assert plain.get("where") == "db3"
        plain.close()
    finally:
        r.stop()


def test_store_client_per_url() -> None:
    lean = connect_store_client("redis://127.0.0.1:7000/2")
    assert isinstance(lean, RespClient)
    assert isinstance(connect_store_client("unix:///tmp/r.sock?db=1"), RespClient)
    assert isinstance(connect_store_client("redis://127.0.0.1:7000/0?cluster=1"), RedisCluster)
    for url in ("rediss://127.0.0.1:7000/0", "redis://127.0.0.1:7000/0?health_check_interval=5"):
        assert not isinstance(connect_store_client(url), RespClient)  # redis-py's options
    with pytest.raises(ValueError):
        RespClient("rediss://127.0.0.1:7000/0")


def test_the_store_also_runs_on_a_redis_py_client(redis_proc: Any) -> None:
    from proctor.server.budgets.redis_store import connect

    async def main() -> None:
        store = RedisBudgetStore(connect(redis_proc.url), "py")
        try:
            await store.start()
            r = await store.reserve(TOKENS, "a", "", "", "", "tokens", 5, 60)
            assert r.granted and r.budgets[0].reserved == 5
            assert (await store.reserve(TOKENS, "a", "", "", "", "tokens", 5, 60)) == r
        finally:
            await store.close()

    run(main())


def test_window_counters_expire_after_their_window_and_others_never(redis_proc: Any) -> None:
    budgets = (budget("day-tokens", "tokens", 100, window="day"),
               budget("min-tokens", "tokens", 100, window="1m", scope="tenant"),
               budget("slots", "agents", 5, kind="concurrency", scope="agent"))

    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_proc.url, "ttl")
        try:
            for rid in ("a", "b"):  # b finds the counters there already
                r = await store.reserve(budgets, rid, "acme", "x", "", "tokens", 1, 60)
                assert r.granted
            await store.reserve(budgets, "lease", "acme", "x", "", "agents", 1, 60)
            await store.commit("a", 3)
        finally:
            await store.close()

    run(main())
    plain = redis.Redis(port=redis_proc.port, decode_responses=True)
    try:
        spans = {"day-tokens": 86_400_000, "min-tokens": 60_000}
        seen = set()
        for key in plain.scan_iter(match="proctor:{ttl}:c:*"):
            bid = next(b.id for b in budgets if f":{b.id}:" in key)
            seen.add(bid)
            if bid == "slots":
                assert plain.pttl(key) == -1
            else:  # P c:SCOPE:SPEC:WINDOW_START_MS:... expires at window end + 1 s
                start = int(key.split(":")[5])
                assert plain.pexpiretime(key) == start + spans[bid] + 1000, key
        assert seen == {"day-tokens", "min-tokens", "slots"}
    finally:
        plain.close()
