"""The Redis sink: the audit stream through the process's one Redis layer, with a disk spool.

A batch goes to Redis as calls of one script (redis/lua/audit/append.lua), at most
XADD_CHUNK events a call, pipelined by the layer's ScriptRunner (which owns loading,
the SHA check, the NOSCRIPT fallback and error mapping): an XADD per event (the
stored line as the single field `event`), one XTRIM MAXLEN ~, and an HSET of the
writer's head (`seq:hash`) in a companion hash `<stream>:heads` (same hash slot as
the stream). The script skips events whose seq is not above the writer's head, so a
batch whose reply was lost, or a spool replay cut short, is never added twice:
exactly once in the stream.

While Redis is unreachable, batches are appended (and fsynced) to
`<spool>/<writer>.jsonl`; once anything is spooled every later batch goes there
too, and the spool is replayed in order, in chunks, before new events reach the
stream. Each live writer holds an flock on `<writer>.lock`; a spool whose lock can
be taken belongs to a dead process and is replayed by whichever writer finds it.
Spool files are read and written in a thread, never on the event loop.

`connect()` is the blocking redis-py client of the audit's command-line tools
(verify, consume, tail), which run outside any event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

from ..redis import Call, RedisLayer, RedisUnavailable, Script
from . import metrics
from .event import safe_name
from .sink import Sealed, SinkCaps
from .spool import Spool

log = logging.getLogger("proctor.audit")

DEFAULT_MAXLEN = 1_000_000
EVENT_FIELD = "event"
# Events per append call: a Redis runs one script at a time, and the budgets and
# approvals sharing it should not wait behind a whole batch (~2.5 us an event).
XADD_CHUNK = 64
_SPOOL_CHUNK = 1000
_DRAIN_PER_WRITE = 20_000
_ORPHAN_SCAN_S = 10.0
APPEND = Script.load("audit", "append")


def heads_key(stream: str) -> str:
    """The writer-head hash beside `stream`, in the same Redis Cluster slot."""
    if "{" in stream and "}" in stream[stream.index("{") + 1 :]:
        return stream + ":heads"
    return "{" + stream + "}:heads"


# XRANGE's reply on a bytes connection: (entry id, {field: value}) per entry.
StreamRows = list[tuple[bytes, dict[bytes, bytes]]]


def connect(url: str, timeout: float = 2.0) -> redis.Redis:
    """A blocking client for the command-line tools that fails fast (no hidden retries)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 1.0),
        retry=Retry(NoBackoff(), 0),
    )


def runs(items: Sequence[tuple[int, bytes]], limit: int) -> Iterator[Sequence[tuple[int, bytes]]]:
    """`items` ((seq, line), in order) cut into runs of consecutive seqs, at most `limit`
    long: a live batch is consecutive; a spool with an unreadable line skipped is not."""
    start = 0
    for i in range(1, len(items) + 1):
        if (i == len(items) or i - start == limit
                or items[i][0] != items[i - 1][0] + 1):
            yield items[start:i]
            start = i


class RedisSink:
    """XADD to `stream` through a RedisLayer, spooling under `spool_dir` while it is away.

    `redis`: the process's RedisLayer (shared with budgets and approvals), or a URL for
    a layer of the sink's own (closed with it)."""

    name = "redis"
    caps = SinkCaps(durable=True, resumable=True)

    def __init__(
        self,
        redis_layer: RedisLayer | str,
        stream: str,
        spool_dir: str | os.PathLike[str],
        maxlen: int = DEFAULT_MAXLEN,
        retry_interval: float = 0.5,
    ) -> None:
        self._own_layer = isinstance(redis_layer, str)
        self.layer = (RedisLayer.from_url(redis_layer) if isinstance(redis_layer, str)
                      else redis_layer)
        self.layer.register([APPEND])
        self.stream = stream
        self.heads = heads_key(stream)
        self.maxlen = maxlen
        self.retry_interval = retry_interval
        self._spool_root = Path(spool_dir)
        self._spool_root.mkdir(parents=True, exist_ok=True)
        self._spool: Spool | None = None
        self._down_until = 0.0
        self._next_orphan_scan = 0.0
        self.spooled = 0
        self.replayed = 0

    # ---- Sink ---------------------------------------------------------------------------

    async def resume(self, writer: str) -> tuple[int, str] | None:
        spool = await self._own(writer)
        last = await asyncio.to_thread(spool.last)
        if last is not None:
            return last
        try:
            head = await self.layer.runner.execute("HGET", self.heads, writer, key=self.heads)
        except RedisUnavailable:
            return None
        if head is None:
            return None
        seq, _, digest = str(head).partition(":")
        return int(seq), digest

    async def write(self, batch: list[Sealed]) -> None:
        spool = await self._own(batch[0].writer)
        now = time.monotonic()
        if now >= self._next_orphan_scan and now >= self._down_until:
            self._next_orphan_scan = now + _ORPHAN_SCAN_S
            await self._drain_orphans()
        if spool.pending() or now < self._down_until:
            await self._spool_batch(spool, batch)
            await self._drain(spool)
            return
        try:
            await self._append(batch[0].writer, [(s.seq, s.line) for s in batch])
        except RedisUnavailable as e:
            self._went_down(e)
            await self._spool_batch(spool, batch)

    async def close(self) -> None:
        spool = self._spool
        if spool is not None:
            if spool.pending():
                self._down_until = 0.0
                if not await self._drain(spool, limit=None):
                    log.warning("audit redis sink closing with %s still spooled: the next "
                                "writer on this directory replays it", spool.path)
            spool.close()
        if self._own_layer:
            await self.layer.close()

    # ---- internals ----------------------------------------------------------------------

    async def _own(self, writer: str) -> Spool:
        if self._spool is None:
            spool = Spool(self._spool_root, safe_name(writer))
            await asyncio.to_thread(spool.lock)
            self._spool = spool
        return self._spool

    async def _spool_batch(self, spool: Spool, batch: list[Sealed]) -> None:
        await asyncio.to_thread(spool.append, batch)
        self.spooled += len(batch)
        metrics.SPOOLED.inc(len(batch))

    def _went_down(self, e: Exception) -> None:
        if self._down_until == 0.0 or time.monotonic() >= self._down_until:
            log.warning("audit redis sink unavailable (%s): spooling to %s", e, self._spool_root)
        self._down_until = time.monotonic() + self.retry_interval
        metrics.SINK_ERRORS.labels(self.name).inc()

    async def _append(self, writer: str, items: Sequence[tuple[int, bytes]]) -> int:
        """append.lua over the items, XADD_CHUNK events a call, pipelined in order: the
        number appended (events already in the stream are skipped by the script).
        RedisUnavailable (or ScriptError) when any call failed: a retry finishes the batch
        without repeating what landed."""
        calls = []
        for run in runs(items, XADD_CHUNK):
            last_seq, last_line = run[-1]
            i = last_line.rfind(b'"hash":"')
            digest = last_line[i + 8 : i + 72] if i >= 0 else b""
            calls.append(Call(APPEND, (self.stream, self.heads), (
                writer, self.maxlen, run[0][0], b"%d:%b" % (last_seq, digest),
                *[line.rstrip(b"\n") for _, line in run])))
        appended = 0
        for reply in await self.layer.runner.run_many(calls, key=self.stream):
            if isinstance(reply, Exception):
                raise reply
            appended += int(reply)
        return appended

    async def _drain(self, spool: Spool, limit: int | None = _DRAIN_PER_WRITE) -> bool:
        """Replay the spool in order (exactly once); True when it is empty."""
        if time.monotonic() < self._down_until:
            return False
        done = 0
        drained = not spool.pending()
        try:
            while not drained and (limit is None or done < limit):
                rows, pos = await asyncio.to_thread(spool.read, _SPOOL_CHUNK)
                if not rows:
                    drained = True  # at most a torn tail is left: never acknowledged
                    break
                by_writer: dict[str, list[tuple[int, bytes]]] = {}
                for writer, seq, line in rows:
                    by_writer.setdefault(writer, []).append((seq, line))
                for writer, items in by_writer.items():
                    self.replayed += await self._append(writer, items)
                spool.advance(pos)
                done += len(rows)
                drained = not spool.pending()
        except RedisUnavailable as e:
            self._went_down(e)
            return False
        if drained:
            await asyncio.to_thread(spool.clear)
            log.info("audit redis sink: spool %s replayed", spool.path)
        return drained

    async def _drain_orphans(self) -> None:
        """Replay spools left by dead writers (their lock is free)."""
        own = self._spool.path.name if self._spool else None
        for path in sorted(self._spool_root.glob("*.jsonl")):
            if path.name == own:
                continue
            orphan = Spool(self._spool_root, path.name[: -len(".jsonl")])
            if not await asyncio.to_thread(orphan.lock, False):
                continue
            try:
                if orphan.pending():
                    log.info("audit redis sink: replaying orphaned spool %s", path)
                    await self._drain(orphan, limit=None)
            finally:
                orphan.close()

