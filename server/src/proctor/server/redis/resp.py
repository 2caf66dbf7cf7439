"""RespClient: the lean asyncio client of one Redis node (RESP2), a `Driver` (driver.py).

Why not redis.asyncio for one node: under grpc.aio its per-command machinery
(connection pool, retry wrapper, hooks, StreamReader, nested timeouts) cost more
per ReserveBudget than the whole Redis round trip (measured side by side in
benchmarks/budget_bench.py; the figures are in docs/redis.md). Here a command is one
`transport.write` and one future, answered straight from `data_received`.

- One connection, pipelined: concurrent callers share it and Redis answers in
  order, so replies are matched to a FIFO of futures (no pool, no checkout).
- Bounded: every command carries a deadline (connecting counts against it). One
  timer watches the earliest deadline; when it passes, the connection is dropped
  and every command on it fails with TimeoutError (a late reply could no longer be
  matched to its caller). The next command reconnects. No retries: the caller
  decides (the stores fail closed).
- Errors are redis-py's exception classes (ResponseError, NoScriptError,
  ConnectionError, TimeoutError), so callers handle both drivers alike.

Serves `redis://` and `unix://` URLs (username, password, db). TLS (`rediss://`)
and Cluster go through redispy.RedisPyDriver.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.connection import parse_url

from .driver import Packed

CRLF = b"\r\n"


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


def bulk(a: Any) -> bytes:
    """One argument as a RESP bulk string (str, bytes, or an int)."""
    if isinstance(a, str):
        a = a.encode()
    elif not isinstance(a, bytes):
        a = str(a).encode()  # ints; bool is not a valid argument anyway
    return b"$%d\r\n%b\r\n" % (len(a), a)


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    return b"*%d\r\n%b" % (len(args), b"".join([bulk(a) for a in args]))


def pack_args(values: Sequence[Any]) -> Packed:
    """Arguments encoded once for many calls (driver.Packed)."""
    strings = tuple(str(v) for v in values)
    return Packed(strings, b"".join(bulk(v) for v in strings))


def _script_call(verb: bytes, script: str, keys: Sequence[str], args: Sequence[Any],
                 tail: Packed, head: bytes = b"") -> bytes:
    """EVALSHA/EVAL script numkeys *keys *args *tail in RESP; the tail as encoded once, and
    `head` (script, numkeys and keys) too when the caller kept it (RespClient._heads)."""
    if not head:
        head = bulk(script) + bulk(len(keys)) + b"".join([bulk(k) for k in keys])
    n = 3 + len(keys) + len(args) + len(tail)
    return b"*%d\r\n$%d\r\n%b\r\n%b%b%b" % (
        n, len(verb), verb, head, b"".join([bulk(a) for a in args]), tail.wire)


def _error(message: str) -> rx.RedisError:
    if message.startswith("NOSCRIPT"):
        return rx.NoScriptError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return rx.AuthenticationError(message)
    return rx.ResponseError(message)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One reply starting at `pos`: (value, position after it). Error replies are returned
    as exception instances (inside arrays too), not raised."""
    end = buf.find(CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete
        return buf[end + 2 : stop].decode(), stop + 2
    line = buf[pos + 1 : end]
    if kind == 43:  # + simple string
        return line.decode(), end + 2
    if kind == 58:  # : integer
        return int(line), end + 2
    if kind == 45:  # - error
        return _error(line.decode(errors="replace")), end + 2
    if kind == 42:  # * array
        n = int(line)
        if n < 0:
            return None, end + 2
        pos = end + 2
        items = []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    raise rx.ConnectionError(f"redis protocol error: unexpected reply type {chr(kind)!r}")


class _Connection(asyncio.Protocol):
    """One socket to Redis and the futures waiting for its replies, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        waiting = self._waiting
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                value, pos = _parse(buf, pos)
                if not waiting:
                    raise rx.ConnectionError("redis protocol error: a reply nobody asked for")
                fut = waiting.popleft()[0]
                if not fut.done():
                    if isinstance(value, rx.RedisError):  # an error reply
                        fut.set_exception(value)
                    else:
                        fut.set_result(value)
        except _Incomplete:
            pass
        except (rx.ConnectionError, ValueError) as e:
            self.abort(e if isinstance(e, rx.ConnectionError) else rx.ConnectionError(str(e)))
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(rx.ConnectionError(f"redis connection lost: {exc or 'closed by server'}"))

    # -- use ---------------------------------------------------------------------------

    def send(self, data: bytes, deadline: float) -> asyncio.Future[Any]:
        """Write one packed command; the future gets its reply."""
        fut = self._loop.create_future()
        if self.closed:
            fut.set_exception(rx.ConnectionError("redis connection closed"))
            return fut
        self._waiting.append((fut, deadline))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        self._transport.write(data)  # type: ignore[union-attr]
        return fut

    def send_many(self, commands: Sequence[bytes], deadline: float
                  ) -> list[asyncio.Future[Any]]:
        """Write several packed commands in one write; a future per reply, in order."""
        futs = [self._loop.create_future() for _ in commands]
        if self.closed:
            for fut in futs:
                fut.set_exception(rx.ConnectionError("redis connection closed"))
            return futs
        self._waiting.extend((fut, deadline) for fut in futs)
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        self._transport.write(b"".join(commands))  # type: ignore[union-attr]
        return futs

    def abort(self, exc: Exception) -> None:
        """Drop the connection and fail what waits on it."""
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        # Armed for the earliest deadline; commands answered meanwhile left the queue, so
        # look again and re-arm for what is now earliest (deadlines are mostly in order).
        self._timer = None
        if not self._waiting:
            return
        now = self._loop.time()
        earliest = min(d for _, d in self._waiting)
        if earliest <= now:
            self.abort(rx.TimeoutError("redis did not answer in time"))
        else:
            self._arm(earliest)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(exc)


class RespClient:
    """A `Driver` over one pipelined connection, each command bounded (module docstring).
    Not thread-safe: one event loop."""

    name = "resp"

    def __init__(self, url: str) -> None:
        self.url = url
        opts = parse_url(url)  # type: ignore[no-untyped-call]
        cls = opts.pop("connection_class", None)
        if cls is not None and cls.__name__ != "UnixDomainSocketConnection":
            raise ValueError(f"RespClient serves redis:// and unix:// URLs only: {url!r}")
        self._path: str | None = opts.get("path")
        self._host: str = opts.get("host", "localhost")
        self._port = int(opts.get("port", 6379))
        self._db = int(opts.get("db", 0))
        self._username: str | None = opts.get("username")
        self._password: str | None = opts.get("password")
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}

    @property
    def address(self) -> str:
        return self._path or f"{self._host}:{self._port}"

    # -- the Driver ----------------------------------------------------------------------

    def execute(self, args: tuple[Any, ...], deadline: float, key: str | None = None) -> Any:
        """One command; an awaitable of its reply (`key` routes nothing on one node)."""
        return self.send_packed(pack(args), deadline)

    def send_packed(self, data: bytes, deadline: float) -> Any:
        """`execute` of a command packed already."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn.send(data, deadline)
        return self._reconnect_and_send(data, deadline)

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any], tail: Packed,
                deadline: float) -> Any:
        # A store sends the same script with the same keys again and again: the RESP of
        # the SHA, numkeys and keys is kept (a few entries: scripts x stores).
        head = self._heads.get((sha, tuple(keys)))
        if head is None:
            head = bulk(sha) + bulk(len(keys)) + b"".join([bulk(k) for k in keys])
            if len(self._heads) < 256:
                self._heads[(sha, tuple(keys))] = head
        return self.send_packed(_script_call(b"EVALSHA", sha, keys, args, tail, head), deadline)

    def eval(self, text: str, keys: Sequence[str], args: Sequence[Any], tail: Packed,
             deadline: float) -> Any:
        return self.send_packed(_script_call(b"EVAL", text, keys, args, tail), deadline)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], key: str | None,
                       deadline: float) -> list[Any]:
        if not commands:
            return []
        conn = self._conn
        if conn is None or conn.closed:
            if self._closed:
                raise rx.ConnectionError("client closed")
            conn = await self._connected(deadline)
        futs = conn.send_many([pack(c) for c in commands], deadline)
        done = await asyncio.gather(*futs, return_exceptions=True)
        for reply in done:  # a failed connection fails every slot alike: raise it
            if isinstance(reply, (rx.ConnectionError, rx.TimeoutError)):
                raise reply
        return list(done)

    async def each_node(self, args: tuple[Any, ...], deadline: float) -> dict[str, Any]:
        try:
            reply = await self.execute(args, deadline)
        except rx.ResponseError as e:
            reply = e
        return {self.address: reply}

    async def close(self) -> None:
        self._closed = True  # a connect still under way is dropped when it completes
        if self._conn is not None:
            self._conn.abort(rx.ConnectionError("client closed"))
            self._conn = None

    # -- connecting ----------------------------------------------------------------------

    async def _reconnect_and_send(self, data: bytes, deadline: float) -> Any:
        if self._closed:
            raise rx.ConnectionError("client closed")
        conn = await self._connected(deadline)
        return await conn.send(data, deadline)

    async def _connected(self, deadline: float) -> _Connection:
        # Callers arriving while a connect is under way share it rather than open their own.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open(deadline))
            self._connecting.add_done_callback(self._connect_done)
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(remaining, 0.0)):
                return await asyncio.shield(self._connecting)
        except TimeoutError:  # asyncio's
            raise rx.TimeoutError("redis connect timed out") from None

    def _connect_done(self, fut: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not fut.cancelled() and fut.exception() is None:
            if self._closed:
                fut.result().abort(rx.ConnectionError("client closed"))
            else:
                self._conn = fut.result()

    async def _open(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                if self._path:
                    _, conn = await loop.create_unix_connection(
                        lambda: _Connection(loop), self._path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), self._host, self._port)
                hello = []
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (
                        self._password,)
                    hello.append(conn.send(pack(("AUTH", *auth)), deadline))
                if self._db:
                    hello.append(conn.send(pack(("SELECT", self._db)), deadline))
                try:
                    await asyncio.gather(*hello)
                except BaseException:
                    conn.abort(rx.ConnectionError("redis handshake failed"))
                    raise
                return conn
        except TimeoutError:  # asyncio's
            raise rx.TimeoutError("redis connect timed out") from None
        except OSError as e:
            raise rx.ConnectionError(f"cannot connect to redis: {e}") from e
