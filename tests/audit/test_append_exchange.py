"""The Redis sink's command exchange: the C twin (no GIL for a whole batch) against the
redis-py reference, on a real redis-server and on a scripted fake one for the failures
a real server will not produce on demand."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from proctor.server.audit import redis_sink
from proctor.server.audit.redis_sink import APPEND_LUA, RedisSink, exchange_c, exchange_py
from proctor.server.audit.sink import Sealed
from tests.support.redis import RedisProcess

built = redis_sink._xadd_c is not None  # noqa: SLF001
TWINS = ["py", pytest.param("c", marks=pytest.mark.skipif(not built, reason="C twin not built"))]
PING = b"*1\r\n$4\r\nPING\r\n"


def test_the_exchange_extension_is_built() -> None:
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert built


def _run(twin: str, conn: redis.Connection, commands: list[bytes], timeout: float = 2.0):
    if twin == "c":
        return exchange_c(conn, commands, timeout)
    return exchange_py(conn, commands)


def _connection(port: int, timeout: float = 2.0) -> redis.Connection:
    conn = redis.Connection(host="127.0.0.1", port=port, socket_timeout=timeout)
    conn.connect()
    return conn


def _sealed(writer: str, first: int, n: int) -> list[Sealed]:
    def line(seq: int) -> bytes:
        return b'{"seq":%d,"writer":"%b","hash":"%064x"}\n' % (seq, writer.encode(), seq)

    return [Sealed(writer, s, line(s)) for s in range(first, first + n)]


@pytest.mark.parametrize("twin", TWINS)
def test_append_scripts_are_answered_in_order_on_a_real_redis(redis_proc: RedisProcess,
                                                              tmp_path: Path, twin: str) -> None:
    sink = RedisSink(redis_proc.url, "s", tmp_path / "spool")
    redis.Redis.from_url(redis_proc.url).script_load(APPEND_LUA)
    items = _sealed("w", 1, 10)
    commands = [sink._command("w", items, 0, 4)[0], sink._command("w", items, 2, 10)[0]]  # noqa: SLF001
    conn = _connection(redis_proc.port)
    try:
        # the second overlaps the first: events 3 and 4 are at or below the head, skipped
        assert _run(twin, conn, commands) == ([4, 6], None)
        assert _run(twin, conn, commands) == ([0, 0], None)  # all in: nothing twice
    finally:
        conn.disconnect()
        sink.close()
    assert redis.Redis.from_url(redis_proc.url).xlen("s") == 10


@pytest.mark.parametrize("twin", TWINS)
def test_an_error_reply_stops_the_exchange_and_names_the_error(redis_proc: RedisProcess,
                                                               twin: str) -> None:
    missing = b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"0" * 40 + b"\r\n$1\r\n0\r\n"
    incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"
    conn = _connection(redis_proc.port)
    try:
        replies, failure = _run(twin, conn, [incr, missing, incr])
        assert replies == [1]
        assert isinstance(failure, redis.exceptions.NoScriptError)
        assert "No matching script" in str(failure)
        # the connection is still good: the error reply was read whole
        assert _run(twin, conn, [incr]) == ([2], None)
    finally:
        conn.disconnect()


class FakeRedis:
    """Accepts one connection and answers each command it receives with the next scripted
    action: reply bytes, "close" or "silent" (reads on, never answers)."""

    def __init__(self, actions: list[bytes | str]) -> None:
        self.actions = list(actions)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        peer, _ = self.listener.accept()
        with peer:
            while data := peer.recv(65536):
                if b"HELLO" in data or b"SETINFO" in data:  # redis-py's handshake (RESP3)
                    peer.sendall(b"%1\r\n$5\r\nproto\r\n:3\r\n" if b"HELLO" in data
                                 else b"+OK\r\n")
                    continue
                action = self.actions.pop(0) if self.actions else "silent"
                if action == "close":
                    return
                if action != "silent":
                    peer.sendall(action)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def fake() -> Iterator[list[FakeRedis]]:
    made: list[FakeRedis] = []
    yield made
    for f in made:
        f.close()


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize(("actions", "error", "replies"), [
    ([b":3\r\n", b":-2\r\n"], None, [3, -2]),
    ([b":3\r\n", b"-ERR boom\r\n"], redis.ResponseError, [3]),
    ([b":3\r\n", "close"], redis.ConnectionError, [3]),
    ([b"+OK\r\n"], redis.ConnectionError, []),
    ([b"$2\r\nhi\r\n"], redis.ConnectionError, []),
    ([b":1\r\n:2\r\n"], (redis.ConnectionError, redis.exceptions.InvalidResponse), []),
    ([b":12x\r\n"], (redis.ConnectionError, redis.exceptions.InvalidResponse), []),
])
def test_failures_stop_the_exchange_with_the_replies_so_far(
        fake: list[FakeRedis], twin: str, actions: list, error: type | None,
        replies: list[int]) -> None:
    f = FakeRedis(actions)
    fake.append(f)
    conn = _connection(f.port)
    try:
        got, failure = _run(twin, conn, [PING, PING])
    finally:
        conn.disconnect()
    if twin == "py" and actions == [b":1\r\n:2\r\n"]:
        # redis-py reads one reply and keeps the stray one buffered: the next read gets it
        assert got == [1, 2] and failure is None
        return
    assert got == replies
    if error is None:
        assert failure is None
    else:
        assert isinstance(failure, error), failure
    if error is redis.ResponseError:
        assert str(failure) == "boom"


@pytest.mark.parametrize("twin", TWINS)
def test_a_silent_server_times_out_within_the_timeout(fake: list[FakeRedis], twin: str) -> None:
    f = FakeRedis([b":7\r\n", "silent"])
    fake.append(f)
    conn = _connection(f.port, timeout=0.3)
    t0 = time.monotonic()
    try:
        got, failure = _run(twin, conn, [PING, PING, PING], timeout=0.3)
    finally:
        conn.disconnect()
    took = time.monotonic() - t0
    assert got == [7] and isinstance(failure, redis.TimeoutError)
    assert 0.25 <= took < 2.0


@pytest.mark.skipif(not built, reason="C twin not built")
def test_the_c_exchange_refuses_what_is_not_a_command() -> None:
    with pytest.raises(TypeError):
        redis_sink._xadd_c.exchange(0, ["PING"], 100)  # noqa: SLF001


def test_a_sink_whose_connection_broke_reconnects_and_appends(redis_proc: RedisProcess,
                                                              tmp_path: Path) -> None:
    sink = RedisSink(redis_proc.url, "s2", tmp_path / "spool", retry_interval=0.0)
    try:
        sink.write(_sealed("w", 1, 3))
        r = redis.Redis.from_url(redis_proc.url)
        r.client_kill_filter(_type="normal", skipme=True)  # every other client: the sink's
        sink.write(_sealed("w", 4, 3))  # fails once: spooled, then replayed on the next
        sink.write(_sealed("w", 7, 1))
        seqs = [int(f[b"event"].split(b",")[0].split(b":")[1]) for _, f in r.xrange("s2")]
        assert seqs == list(range(1, 8))
    finally:
        sink.close()
