"""A lean asyncio Redis client for the budget store's hot path (one node, RESP2).

Why not redis.asyncio: under grpc.aio its per-command machinery (connection
pool, retry wrapper, observability hooks, StreamReader, nested timeouts) cost
0.1-0.2 ms per ReserveBudget on top of the Redis round trip itself (issue #4).
Here a command is one `transport.write` and one future, answered straight from
`data_received`.

- One connection, pipelined: concurrent callers share it and Redis answers in
  order, so replies are matched to a FIFO of futures (no pool, no checkout).
- Bounded: every command carries a deadline (default now + `timeout`; connecting
  counts against it). One timer watches the earliest deadline; when it passes,
  the connection is dropped and every command on it fails with TimeoutError
  (a late reply could no longer be matched to its caller). The next command
  reconnects. No retries: the caller decides (the store fails closed).
- Waiting when idle: a command sent while nothing else waits on the event loop
  (no reply outstanding, no callback ready) waits for its reply on the socket
  itself, for up to IDLE_WAIT (0.5 ms), and is answered without a trip through
  the loop's selector and a task wake-up: ~30 us less per call at one call in
  flight, which is how an agent that reserves before each step calls. Past
  IDLE_WAIT, or whenever other work is pending, the reply comes through the
  loop as usual, so the loop is never held longer than that.
- Errors are redis-py's exception classes (ResponseError, NoScriptError,
  ConnectionError, TimeoutError), so code written for either client handles both.

Serves `redis://` and `unix://` URLs (username, password, db). TLS (`rediss://`)
and Cluster stay with redis-py (see `redis_store.connect_store_client`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import select
from typing import Any

from redis import exceptions as rx
from redis.connection import parse_url

from ..loop_idle import pending_callbacks

CRLF = b"\r\n"
IDLE_WAIT = 0.0005  # seconds a command sent on an idle loop waits on the socket itself


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
        self._fd = -1
        self._ready: Any = None
        self.closed = False

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        # select() takes descriptors below FD_SETSIZE only; past it, no idle wait
        self._fd = fd if 0 <= fd < 1024 else -1
        self._ready = pending_callbacks(self._loop)

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
        idle = not self._waiting and self._ready is not None and not self._ready
        self._waiting.append((fut, deadline))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        self._transport.write(data)  # type: ignore[union-attr]
        if idle and self._fd >= 0:
            self._wait_idle(fut)
        return fut

    def _wait_idle(self, fut: asyncio.Future[Any]) -> None:
        """Read the reply off the socket for up to IDLE_WAIT (module docstring). The
        bytes go through data_received as if the loop had read them; what does not
        arrive in time is read by the loop's reader as usual."""
        fd = self._fd
        if self._transport.get_write_buffer_size():  # type: ignore[union-attr]
            return  # not all sent yet: the loop's writer finishes it
        wait = IDLE_WAIT
        while not fut.done() and not self.closed:
            readable = select.select((fd,), (), (), wait)[0]
            if not readable:
                return
            try:
                data = os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # the loop's reader meets the same error and reports it
            if not data:
                return  # EOF: left to the loop's reader, which closes the connection
            self.data_received(data)
            wait = 0.0001  # the rest of a reply split across reads is near

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
        self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(exc)


class RespClient:
    """Redis commands over one pipelined connection, each bounded (module docstring).

    Method names and results follow redis.asyncio (decoded strings) for the few
    commands the budget store sends. Not thread-safe: one event loop.
    """

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        self.url = url
        opts = parse_url(url)
        cls = opts.pop("connection_class", None)
        if cls is not None and cls.__name__ != "UnixDomainSocketConnection":
            raise ValueError(f"RespClient serves redis:// and unix:// URLs only: {url!r}")
        self._path: str | None = opts.get("path")
        self._host: str = opts.get("host", "localhost")
        self._port = int(opts.get("port", 6379))
        self._db = int(opts.get("db", 0))
        self._username: str | None = opts.get("username")
        self._password: str | None = opts.get("password")
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    # -- commands (redis.asyncio names) --------------------------------------------------

    def execute(self, *args: Any, deadline: float | None = None) -> Any:
        """Send one command; an awaitable of its reply. `deadline` is loop time."""
        return self.send_packed(pack(args), deadline)

    def send_packed(self, data: bytes, deadline: float | None = None) -> Any:
        """`execute` of a command packed already (`pack`, or a caller's cached parts)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            return conn.send(data, deadline)
        return self._reconnect_and_send(data, deadline)

    def evalsha(self, sha: str, numkeys: int, *args: Any, deadline: float | None = None) -> Any:
        return self.execute("EVALSHA", sha, numkeys, *args, deadline=deadline)

    def eval(self, script: str, numkeys: int, *args: Any, deadline: float | None = None) -> Any:
        return self.execute("EVAL", script, numkeys, *args, deadline=deadline)

    async def script_load(self, script: str) -> str:
        sha: str = await self.execute("SCRIPT", "LOAD", script)
        return sha

    async def ping(self) -> bool:
        return await self.execute("PING") == "PONG"

    async def aclose(self) -> None:
        self._closed = True  # a connect still under way is dropped when it completes
        if self._conn is not None:
            self._conn.abort(rx.ConnectionError("client closed"))
            self._conn = None

    # -- connecting ----------------------------------------------------------------------

    async def _reconnect_and_send(self, data: bytes, deadline: float | None) -> Any:
        if self._closed:
            raise rx.ConnectionError("client closed")
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.timeout
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
