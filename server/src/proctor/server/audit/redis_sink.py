"""The Redis sink: pipelined XADD to a stream (MAXLEN ~), with a disk spool for outages.

A batch goes in calls of an atomic Lua script (lua/append.lua), at most XADD_CHUNK
events each: an XADD per event (the stored line as the single field `event`), one
XTRIM MAXLEN ~, and an HSET of the writer's head (`seq:hash`) in a companion hash
`<stream>:heads` (same hash slot as the stream). The script skips events whose seq
is not above the writer's head, so a batch whose reply was lost, or a spool replay
interrupted halfway, is never added twice: exactly once in the stream. The calls
are sent one after another, each after the last one's reply, in one C call that
gives the GIL up once for the whole batch (_xadd.c).

While Redis is unreachable, batches are appended (and fsynced) to
`<spool>/<writer>.jsonl`; once anything is spooled every later batch goes there
too, and the spool is drained in order, in chunks, before new events reach the
stream. Each live writer holds an flock on `<writer>.lock`; a spool whose lock
can be taken belongs to a dead process and is drained by whichever writer
finds it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

import redis
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..redis import bulk
from ..twins import twin
from . import metrics
from .event import safe_name
from .sink import Sealed
from .spool import Spool

log = logging.getLogger("proctor.audit")

DEFAULT_MAXLEN = 1_000_000
EVENT_FIELD = "event"
_CHUNK = 1000
_DRAIN_PER_WRITE = 20_000
_ORPHAN_SCAN_S = 10.0
# Events per append script: ~0.16 ms of Redis time (2.5 us an event; 750 in one call
# took 4.1 ms, 5.5 us an event). See RedisSink._xadd.
XADD_CHUNK = 64
APPEND_LUA = (Path(__file__).parent / "lua" / "append.lua").read_text()


def heads_key(stream: str) -> str:
    """The writer-head hash beside `stream`, in the same Redis Cluster slot."""
    if "{" in stream and "}" in stream[stream.index("{") + 1 :]:
        return stream + ":heads"
    return "{" + stream + "}:heads"


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A client that fails fast (no hidden retries), so an outage is seen at once."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
    )


def append_args_py(items: list[Any], start: int, stop: int) -> tuple[bytes, int]:
    """append.lua's ARGV from the third on, as RESP bulk strings, for the run of
    items[start:stop] (0 <= start < stop <= len(items)) whose seqs are consecutive: the
    first seq, the head after the run (`<seq>:<hash>`, the hash the hex after the last
    line's last `"hash":"`), each line without its newline; and where the run ends.
    An item is any tuple ending in (seq, line): a Sealed, or a (seq, line) pair. The
    reference for the C twin (_xadd.c), which serves when built."""
    if not 0 <= start < stop <= len(items):
        raise ValueError("append_args: need 0 <= start < stop <= len(items)")
    end = start + 1
    while end < stop and items[end][-2] == items[end - 1][-2] + 1:
        end += 1
    seq, line = items[end - 1][-2], items[end - 1][-1]
    i = line.rfind(b'"hash":"')
    digest = line[i + 8 : i + 72] if i >= 0 else b""
    parts = [bulk(b"%d" % items[start][-2]), bulk(b"%d:%b" % (seq, digest))]
    for item in items[start:end]:
        line = item[-1]
        parts.append(bulk(line[:-1] if line.endswith(b"\n") else line))
    return b"".join(parts), end


_xadd_c = twin("proctor.server.audit._xadd")
append_args = _xadd_c.append_args if _xadd_c is not None else append_args_py

# _xadd.exchange's failure kinds (1, an error reply, is parsed as redis-py would)
_EXCHANGE_FAILURES: dict[int, type[redis.RedisError]] = {
    2: redis.ConnectionError, 3: redis.TimeoutError, 4: redis.ConnectionError,
    5: redis.ConnectionError,
}


def exchange_py(conn: Any, commands: list[bytes]) -> tuple[list[int], redis.RedisError | None]:
    """Send each packed command and read its integer reply, one after another, stopping
    at the first failure: (the replies so far, that failure or None). The reference for
    the C twin (_xadd.exchange), which does the same without the GIL."""
    replies: list[int] = []
    for command in commands:
        try:
            conn.send_packed_command([command])
            reply = conn.read_response()
        except redis.RedisError as exc:
            return replies, exc
        except ValueError as exc:  # redis-py's int() of a malformed integer reply
            return replies, redis.ConnectionError(f"unexpected reply: {exc}")
        if not isinstance(reply, int):
            return replies, redis.ConnectionError(f"unexpected reply {reply!r}")
        replies.append(reply)
    return replies, None


def exchange_c(conn: Any, commands: list[bytes], timeout: float) -> tuple[
        list[int], redis.RedisError | None]:
    """exchange_py through _xadd.exchange, on the connection's socket."""
    replies, kind, message = _xadd_c.exchange(  # type: ignore[union-attr]
        conn._sock.fileno(), commands, max(1, int(timeout * 1000)))
    if kind == 0:
        return replies, None
    if kind == 1:
        return replies, BaseParser.parse_error(message)
    return replies, _EXCHANGE_FAILURES[kind](f"audit append: {message}")


class RedisSink:
    """XADD to `stream`, spooling under `spool_dir` while Redis is away."""

    name = "redis"

    def __init__(
        self,
        url: str,
        stream: str,
        spool_dir: str | os.PathLike[str],
        maxlen: int = DEFAULT_MAXLEN,
        retry_interval: float = 0.5,
        timeout: float = 2.0,
    ) -> None:
        self.stream = stream
        self.heads = heads_key(stream)
        self.maxlen = maxlen
        self.retry_interval = retry_interval
        self._r = connect(url, timeout)
        self._timeout = timeout
        self._conn: Any = None  # the appends' own connection, out of the pool for good
        self._append_sha = hashlib.sha1(APPEND_LUA.encode()).hexdigest().encode()
        self._keys_packed = bulk(stream.encode()) + bulk(self.heads.encode())
        self._spool_root = Path(spool_dir)
        self._spool_root.mkdir(parents=True, exist_ok=True)
        self._spool: Spool | None = None
        self._down_until = 0.0
        self._next_orphan_scan = 0.0
        self.spooled = 0
        self.replayed = 0

    # ---- Sink ---------------------------------------------------------------------------

    def resume(self, writer: str) -> tuple[int, str] | None:
        spool = self._own(writer)
        last = spool.last()
        if last is not None:
            return last
        try:
            head = self._r.hget(self.heads, writer)
        except redis.RedisError:
            return None
        if head is None:
            return None
        seq, _, digest = head.decode().partition(":")
        return int(seq), digest

    def write(self, batch: list[Sealed]) -> None:
        spool = self._own(batch[0].writer)
        now = time.monotonic()
        if now >= self._next_orphan_scan and now >= self._down_until:
            self._next_orphan_scan = now + _ORPHAN_SCAN_S
            self._drain_orphans()
        if spool.pending() or now < self._down_until:
            self._spool_batch(spool, batch)
            self._drain(spool)
            return
        try:
            self._xadd(batch[0].writer, batch)
        except redis.RedisError as exc:
            self._went_down(exc)
            self._spool_batch(spool, batch)

    def close(self) -> None:
        if self._spool is not None:
            if self._spool.pending():
                self._down_until = 0.0
                if not self._drain(self._spool, limit=None):
                    log.warning(
                        "audit redis sink closing with %s still spooled: the next writer "
                        "on this directory replays it", self._spool.path,
                    )
            self._spool.close()
        if self._conn is not None:
            self._conn.disconnect()
            self._r.connection_pool.release(self._conn)
            self._conn = None
        self._r.close()

    # ---- internals ----------------------------------------------------------------------

    def _own(self, writer: str) -> Spool:
        if self._spool is None:
            self._spool = Spool(self._spool_root, safe_name(writer))
            self._spool.lock()
        return self._spool

    def _spool_batch(self, spool: Spool, batch: list[Sealed]) -> None:
        spool.append(batch)
        self.spooled += len(batch)
        metrics.SPOOLED.inc(len(batch))

    def _went_down(self, exc: Exception) -> None:
        if self._down_until == 0.0 or time.monotonic() >= self._down_until:
            log.warning("audit redis sink unavailable (%s): spooling to %s", exc, self._spool_root)
        self._down_until = time.monotonic() + self.retry_interval
        metrics.SINK_ERRORS.labels(self.name).inc()

    def _xadd(self, writer: str, items: list[Any]) -> int:
        """Append in script calls of at most XADD_CHUNK events, one after another: a Redis
        runs one script at a time, and the budgets and approvals that share it should not
        wait behind a whole batch (~750 events in one call held it 4.1 ms). Each call
        skips events at or below the writer's head, so a batch cut between calls is
        finished, not duplicated, by its retry or the spool's replay."""
        commands = []
        i = 0
        while i < len(items):
            command, i = self._command(writer, items, i, min(i + XADD_CHUNK, len(items)))
            commands.append(command)
        appended = 0
        loaded = False
        while True:
            replies, failure = self._exchange(commands)
            appended += sum(replies)
            if failure is None:
                return appended
            if isinstance(failure, redis.exceptions.NoScriptError) and not loaded:
                self._r.script_load(APPEND_LUA)  # Redis restarted or flushed its scripts
                loaded = True
                commands = commands[len(replies):]
                continue
            raise failure

    def _command(self, writer: str, items: list[Any], start: int,
                 stop: int) -> tuple[bytes, int]:
        """The EVALSHA of append.lua for the run of consecutive seqs from items[start]
        (stop at the latest), and where it ends. A live batch is one run; a spool with a
        line skipped as unreadable is several.

        Packed here (append_args, in C when built) rather than by redis-py: this thread
        holds the GIL while it packs, and redis-py's ~1 us an argument kept the event
        loop waiting on every batch.
        """
        args, end = append_args(items, start, stop)
        return b"*%d\r\n%b%b%b%b%b%b" % (
            9 + end - start, bulk(b"EVALSHA"), bulk(self._append_sha),
            b"$1\r\n2\r\n", self._keys_packed,
            bulk(writer.encode()) + bulk(b"%d" % self.maxlen), args), end

    def _exchange(self, commands: list[bytes]) -> tuple[list[int], redis.RedisError | None]:
        """Send the commands in order on the appends' connection, each after the last
        one's reply; stop at the first failure. A connection in an unknown state (no
        reply, a broken socket) is dropped; the next call reconnects.

        In C (exchange_c) the whole batch gives the GIL up once. Through redis-py every
        send and read gave it up and took it back, and taking it back from a busy event
        loop cost Evaluate ~4% of its calls/s at 8 in flight (see _xadd.c). TLS
        connections take the redis-py path: the C twin writes to the bare socket.
        """
        conn = self._conn
        if conn is None:
            conn = self._conn = self._r.connection_pool.get_connection()
        try:
            conn.connect()  # a no-op while connected
            sock = conn._sock
            if _xadd_c is not None and not isinstance(sock, ssl.SSLSocket):
                replies, failure = exchange_c(conn, commands, self._timeout)
            else:
                replies, failure = exchange_py(conn, commands)
        except BaseException:
            conn.disconnect()
            raise
        if failure is not None and not isinstance(failure, redis.ResponseError):
            conn.disconnect()
        return replies, failure

    def _drain(self, spool: Spool, limit: int | None = _DRAIN_PER_WRITE) -> bool:
        """Replay the spool in order (exactly once); True when it is empty."""
        if time.monotonic() < self._down_until:
            return False
        done = 0
        drained = not spool.pending()
        try:
            while not drained and (limit is None or done < limit):
                rows, pos = spool.read(_CHUNK)
                if not rows:
                    drained = True  # at most a torn tail is left: never acknowledged
                    break
                by_writer: dict[str, list[tuple[int, bytes]]] = {}
                for writer, seq, line in rows:
                    by_writer.setdefault(writer, []).append((seq, line))
                for writer, items in by_writer.items():
                    self.replayed += self._xadd(writer, items)
                spool.advance(pos)
                done += len(rows)
                drained = not spool.pending()
        except redis.RedisError as exc:
            self._went_down(exc)
            return False
        if drained:
            spool.clear()
            log.info("audit redis sink: spool %s replayed", spool.path)
            return True
        return False

    def _drain_orphans(self) -> None:
        """Replay spools left by dead writers (their lock is free)."""
        own = self._spool.path.name if self._spool else None
        for path in sorted(self._spool_root.glob("*.jsonl")):
            if path.name == own:
                continue
            orphan = Spool(self._spool_root, path.name[: -len(".jsonl")])
            if not orphan.lock(blocking=False):
                continue
            try:
                if orphan.pending():
                    log.info("audit redis sink: replaying orphaned spool %s", path)
                    self._drain(orphan, limit=None)
            finally:
                orphan.close()
