"""RespClient (proctor.server.redis.resp), the lean Driver of one node: replies of every RESP
type, pipelined callers matched to their replies, errors, the per-command bound,
reconnecting, AUTH and SELECT, pipelines and the script-call encoding."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
import redis
from redis import exceptions as rx

from proctor.server.redis import RespClient, pack, pack_args
from proctor.server.redis.resp import _Incomplete, _parse, _script_call
from tests.support.redis import start_redis


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Client:
    """RespClient with the call bound applied per command (as the ScriptRunner does)."""

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.c = RespClient(url)
        self.timeout = timeout

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.timeout

    def execute(self, *args: Any) -> Any:
        return self.c.execute(args, self._deadline())

    async def ping(self) -> bool:
        return bool(await self.execute("PING") == "PONG")

    def eval(self, text: str, *args: Any) -> Any:
        return self.c.eval(text, (), args, pack_args(()), self._deadline())

    def evalsha(self, sha: str, *args: Any) -> Any:
        return self.c.evalsha(sha, (), args, pack_args(()), self._deadline())

    async def aclose(self) -> None:
        await self.c.close()


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
        c = Client(redis_proc.url)
        try:
            assert await c.ping()
            sha = await c.execute("SCRIPT", "LOAD", "return ARGV[1] .. KEYS[1]")
            big = "x" * 200_000  # a reply that arrives in many reads
            replies = await asyncio.gather(*(
                c.c.evalsha(sha, (str(i),), (big if i % 50 == 0 else f"v{i}",),
                            pack_args(()), asyncio.get_running_loop().time() + 1)
                for i in range(500)
            ))
            assert replies == [(big if i % 50 == 0 else f"v{i}") + str(i) for i in range(500)]
            assert await c.execute("INCRBY", "n", 3) == 3
            assert await c.eval("return {1, 'a', {false}}") == [1, "a", [None]]
            with pytest.raises(rx.NoScriptError):
                await c.evalsha("0" * 40)
            with pytest.raises(rx.ResponseError, match="user_script"):
                await c.eval("return redis.error_reply('boom user_script')")
            assert await c.ping()  # errors leave the connection usable
        finally:
            await c.aclose()

    run(main())


def test_a_command_is_bounded_and_the_connection_recovers(redis_proc: Any) -> None:
    async def main() -> None:
        c = Client(redis_proc.url, timeout=0.3)
        try:
            assert await c.ping()
            os.kill(redis_proc.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                results = await asyncio.gather(c.ping(), c.execute("INCR", "k"),
                                               return_exceptions=True)
                assert time.monotonic() - t0 < 3.0  # the 0.3 s timeout, not the SIGCONT
                assert all(isinstance(r, rx.TimeoutError) for r in results)
            finally:
                os.kill(redis_proc.proc.pid, signal.SIGCONT)
            assert await c.execute("INCR", "k") == 2  # a new connection; the lost INCR ran
            redis_proc.kill()
            with pytest.raises(rx.ConnectionError):
                await c.ping()
            t0 = time.monotonic()
            with pytest.raises(rx.ConnectionError):
                await c.ping()  # nothing listens: refused, not retried until a deadline
            assert time.monotonic() - t0 < 3.0
            redis_proc.start()
            assert await c.ping()
        finally:
            await c.aclose()

    run(main())


def test_a_caller_that_gives_up_leaves_the_others_their_replies(redis_proc: Any) -> None:
    async def main() -> None:
        c = Client(redis_proc.url)
        try:
            assert await c.ping()  # connected: each call below is written as it is made
            slow = asyncio.ensure_future(c.eval(
                "local t = redis.call('TIME') local e = t[1] * 1e6 + t[2] + 200000 "
                "while true do t = redis.call('TIME') "
                "if t[1] * 1e6 + t[2] > e then break end end return 'slow'"))
            after = asyncio.ensure_future(c.execute("ECHO", "after"))
            slow.cancel()  # gives up while its reply is still to come
            assert await after == "after"
            assert await c.execute("ECHO", "next") == "next"
        finally:
            await c.aclose()

    run(main())


def test_a_pipeline_answers_in_order_with_errors_in_their_slots(redis_proc: Any) -> None:
    async def main() -> None:
        c = RespClient(redis_proc.url)
        try:
            deadline = asyncio.get_running_loop().time() + 1
            got = await c.pipeline([("SET", "p", "1"), ("INCR", "p"), ("HGET", "p", "x"),
                                    ("ECHO", "é")], None, deadline)
            assert got[:2] == ["OK", 2] and got[3] == "é"
            assert isinstance(got[2], rx.ResponseError) and "WRONGTYPE" in str(got[2])
            assert await c.each_node(("ECHO", "x"), deadline) == {f"127.0.0.1:{redis_proc.port}":
                                                                  "x"}
        finally:
            await c.close()

    run(main())


def test_a_script_call_from_packed_parts_is_what_pack_makes() -> None:
    tail = pack_args(("86400000", "5:acme", '"é"', 2, "c:fleet:day:", ":1:b:"))
    for keys, args in ((("proctor:{f}:",), ("r-1", 1, 60_000)),
                       (("k1", "k2"), ("ré\u00e9-\U0001f600", 2**53 - 1, "x" * 300))):
        got = _script_call(b"EVALSHA", "ab" * 20, keys, args, tail)
        assert got == pack(("EVALSHA", "ab" * 20, len(keys), *keys, *args, *tail.values))


def test_auth_and_database_from_the_url(tmp_path: Any) -> None:
    r = start_redis(tmp_path / "auth")  # a private server: its password is ours to set
    try:
        redis.Redis(port=r.port).config_set("requirepass", "s3cret")
        async def main() -> None:
            good = Client(f"redis://:s3cret@127.0.0.1:{r.port}/3")
            try:
                await good.execute("SET", "where", "db3")
            finally:
                await good.aclose()
            bad = Client(f"redis://:wrong@127.0.0.1:{r.port}/0")
            with pytest.raises(rx.ConnectionError):
                await bad.ping()
            await bad.aclose()

        run(main())
        plain = redis.Redis(port=r.port, password="s3cret", db=3, decode_responses=True)
        assert plain.get("where") == "db3"
        plain.close()
    finally:
        r.stop()
