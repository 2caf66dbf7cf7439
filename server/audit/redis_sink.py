"""The Redis sink: pipelined XADD to a stream (MAXLEN ~), with a disk spool for outages.

Each batch is one call of an atomic Lua script (lua/append.lua): an XADD per
event (the stored line as the single field `event`, MAXLEN ~) and an HSET of the
writer's head (`seq:hash`) in a companion hash `<stream>:heads` (same hash slot
as the stream). The script skips events whose seq is not above the writer's
head, so a batch whose reply was lost, or a spool replay interrupted halfway, is
never added twice: exactly once in the stream.

While Redis is unreachable, batches are appended (and fsynced) to
`<spool>/<writer>.jsonl`; once anything is spooled every later batch goes there
too, and the spool is drained in order, in chunks, before new events reach the
stream. Each live writer holds an flock on `<writer>.lock`; a spool whose lock
can be taken belongs to a dead process and is drained by whichever writer
finds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..budgets.resp import bulk
from ..twins import twin
from . import metrics
from .event import safe_name
from .sink import Sealed

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


def xadd_fields_py(items: list[Any], start: int, stop: int) -> bytes:
    """append.lua's ARGV triples for items[start:stop] (start, stop >= 0) as RESP bulk
    strings: seq, the event's hash (the hex after the line's last `"hash":"`), the line
    without its newline. An item is any tuple ending in (seq, line): a Sealed, or a
    (seq, line) pair. The reference for the C twin (_xadd.c), which serves when built."""
    parts = []
    for item in items[start:stop]:
        seq, line = item[-2], item[-1]
        i = line.rfind(b'"hash":"')
        digest = line[i + 8 : i + 72] if i >= 0 else b""
        seq_b = b"%d" % seq
        n = len(line) - 1 if line.endswith(b"\n") else len(line)
        parts.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            len(seq_b), seq_b, len(digest), digest, n, memoryview(line)[:n]))
    return b"".join(parts)


_xadd_c = twin("server.audit._xadd")
xadd_fields = _xadd_c.xadd_fields if _xadd_c is not None else xadd_fields_py


class Spool:
    """One writer's append-only spool file, read back in order."""

    def __init__(self, root: Path, writer_file: str) -> None:
        self.path = root / f"{writer_file}.jsonl"
        self.lock_path = root / f"{writer_file}.lock"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._read_pos = 0

    def lock(self, blocking: bool = True) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def pending(self) -> bool:
        try:
            return self.path.stat().st_size > self._read_pos
        except FileNotFoundError:
            return False

    def append(self, batch: list[Sealed]) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = b"".join(s.line for s in batch)
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def last(self) -> tuple[int, str] | None:
        from .file_sink import last_complete_line

        if not self.path.exists():
            return None
        line = last_complete_line(self.path)
        if line is None:
            return None
        try:
            obj = json.loads(line)
            return int(obj["seq"]), str(obj["hash"])
        except (ValueError, KeyError, TypeError):
            return None

    def read(self, limit: int) -> tuple[list[tuple[str, int, bytes]], int]:
        """Up to `limit` complete (writer, seq, line) from the read position, and the end offset."""
        out: list[tuple[str, int, bytes]] = []
        pos = self._read_pos
        with open(self.path, "rb") as f:
            f.seek(pos)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn tail of a dead writer: never acknowledged, skipped
                pos += len(line)
                try:
                    obj = json.loads(line)
                    out.append((str(obj["writer"]), int(obj["seq"]), line))
                except (ValueError, KeyError, TypeError):
                    log.error("audit spool %s: unreadable line skipped", self.path)
                if len(out) >= limit:
                    break
        return out, pos

    def advance(self, pos: int) -> None:
        self._read_pos = pos

    def clear(self) -> None:
        """Everything was replayed: drop the file (only while holding the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._read_pos = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.unlock()


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
        return sum(self._xadd_chunk(writer, items, i, min(i + XADD_CHUNK, len(items)))
                   for i in range(0, len(items), XADD_CHUNK))

    def _xadd_chunk(self, writer: str, items: list[Any], start: int, stop: int) -> int:
        """Append items[start:stop] in one atomic script call; events at or below the
        writer's head are skipped.

        The EVALSHA is packed here (xadd_fields, in C when built) rather than by
        redis-py: this thread holds the GIL while it packs, and redis-py's ~1 us an
        argument (three an event) kept the event loop waiting on every batch.
        """
        command = b"*%d\r\n%b%b%b%b%b%b" % (
            7 + 3 * (stop - start), bulk(b"EVALSHA"), bulk(self._append_sha),
            b"$1\r\n2\r\n", self._keys_packed,
            bulk(writer.encode()) + bulk(b"%d" % self.maxlen),
            xadd_fields(items, start, stop))
        try:
            return int(self._call(command))
        except redis.exceptions.NoScriptError:
            self._r.script_load(APPEND_LUA)  # Redis restarted or flushed its scripts
            return int(self._call(command))

    def _call(self, command: bytes) -> Any:
        """Send one packed command on a pooled connection and read its reply."""
        pool = self._r.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command([command])
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

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
