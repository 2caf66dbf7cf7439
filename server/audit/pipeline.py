"""The audit pipeline seen by the request path: a bounded queue and one background writer.

`record()` only appends a small tuple to a bounded deque and, when the writer
sleeps, wakes it (no hashing, no JSON, no asyncio.Queue bookkeeping per event).
A writer task takes everything waiting (up to `max_batch`; with async durability
after lingering up to 20 ms so batches, and fsyncs, stay few), chains and seals
it (serializes once) in small chunks between requests, hands it to a dedicated
one-thread executor which writes it to the sink with one fsync, then wakes the
batch's `sync` waiters: group commit.
The chain state (seq, prev_hash) belongs to the writer task alone, so no lock is
ever held across I/O.

Full queue: `block` awaits room; `shed` drops the event, counts it, and the
next free slot carries a `gap` event with the count, so the chain shows the hole
exactly where it happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from typing import Any

from ..ids import new_generator
from . import metrics
from .event import (
    DECISION_FIELDS,
    GENESIS,
    format_micros,
    format_time,
    plain,
    quote,
    seal,
    seal_decision,
)
from .sink import Sealed, Sink

_DECISION_SIZE = len(DECISION_FIELDS)

log = logging.getLogger("proctor.audit")

DEFAULT_LINGER = 0.02  # seconds, async durability only
SEAL_CHUNK = 8  # events sealed between yields to the request path (~40 µs)
SEAL_TURNS = 3  # loop turns let through between chunks (async durability, no backlog)
_FLUSH = "\x00flush"


def _name_native_thread() -> None:
    """Name the writer thread for top -H / ps (Linux; best effort)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, b"audit-writer", 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class NullAudit:
    """Records nothing: for unit tests and while no sink is configured."""

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        del kind, fields

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        del kind, fields
        return True

    async def close(self) -> None:
        return None


class AuditClosed(RuntimeError):
    """record() after close()."""


class AuditPipeline:
    """Bounded queue + background writer in front of one sink.

    The caller hands `fields` over: it must not mutate the dict after record().
    """

    def __init__(
        self,
        sink: Sink,
        *,
        writer: str,
        hmac_key: bytes | None = None,
        queue_size: int = 65536,
        full_policy: str = "block",
        durability: str = "async",
        max_batch: int = 2048,
        linger: float | None = None,
    ) -> None:
        if full_policy not in ("block", "shed"):
            raise ValueError(f"audit queue policy must be block or shed, not {full_policy!r}")
        if durability not in ("async", "sync"):
            raise ValueError(f"audit durability must be async or sync, not {durability!r}")
        self.sink = sink
        self.writer = writer
        self._key = hmac_key
        # (kind, fields, time, sync future or None), oldest first; the loop thread appends,
        # the writer task pops: both on the event loop, so no lock.
        self._items: deque[tuple[str, Any, float, Any]] = deque()
        self._capacity = max(1, queue_size)
        self._wake = asyncio.Event()  # set when the idle writer has work
        self._room = asyncio.Event()  # set when the writer took items (block policy)
        self._idle = False
        self._stopping = False
        self._shed = full_policy == "shed"
        self._sync = durability == "sync"
        self._max_batch = max(1, max_batch)
        # async: let a batch gather for up to `linger` so the writer wakes (and fsyncs) per
        # batch, not per event; an event reaches disk within ~linger + one fsync.
        # sync: no wait (records pile up while the previous batch's fsync is in flight).
        self._linger = (0.0 if self._sync else DEFAULT_LINGER) if linger is None else linger
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="audit-writer", initializer=_name_native_thread
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._abort = False
        # loop-thread state
        self._shed_pending = 0
        self._shed_first = 0.0
        self._shed_last = 0.0
        # writer-thread state
        self._ids = new_generator()
        self._seq = 0
        self._prev = GENESIS
        self._writer_json = quote(writer)
        self._resumed = False
        self.stats = {"written": 0, "shed": 0, "gaps": 0, "batches": 0, "sink_errors": 0}

    # ---- request path -------------------------------------------------------------------

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Enqueue one event; with sync durability, return once it is on disk."""
        if self._closed:
            raise AuditClosed("audit pipeline is closed")
        if self._task is None:
            self._start()
        items = self._items
        if self._shed_pending:
            self._enqueue_gap()
        if len(items) >= self._capacity:
            if self._shed:
                self._count_shed(time.time())
                return
            while len(items) >= self._capacity:
                self._room.clear()
                await self._room.wait()
        fut = self._loop.create_future() if self._sync else None  # type: ignore[union-attr]
        items.append((kind, fields, time.time(), fut))
        if self._idle:
            self._idle = False
            self._wake.set()
        if fut is not None:
            await fut

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        """Enqueue now if that is all record() would do; False: the caller awaits record().

        The request path's common case (async durability, room in the queue, no gap to
        write first) without a coroutine per call. Sync durability, a full queue, a
        pending gap or a writer not started yet all go through record().
        """
        items = self._items
        if (self._sync or self._task is None or self._shed_pending or self._closed
                or len(items) >= self._capacity):
            return False
        items.append((kind, fields, time.time(), None))
        if self._idle:
            self._idle = False
            self._wake.set()
        return True

    def record_threadsafe(
        self, kind: str, fields: dict[str, Any]
    ) -> concurrent.futures.Future[None]:
        """record() from a thread other than the event loop's (e.g. a file watcher)."""
        if self._loop is None:
            raise RuntimeError("audit pipeline not started: call start() on the event loop first")
        return asyncio.run_coroutine_threadsafe(self.record(kind, fields), self._loop)

    def _count_shed(self, when: float) -> None:
        if not self._shed_pending:
            self._shed_first = when
        self._shed_pending += 1
        self._shed_last = when
        self.stats["shed"] += 1
        metrics.SHED.inc()

    def _enqueue_gap(self) -> None:
        """Put the pending shed count into the chain if a slot is free (loop thread)."""
        if len(self._items) >= self._capacity:
            return
        n = self._shed_pending
        fields = {
            "count": n,
            "outcome": "shed",
            "reason": f"{n} audit events shed: queue full",
            "first_shed": format_time(self._shed_first),
            "last_shed": format_time(self._shed_last),
        }
        self._items.append(("gap", fields, self._shed_last, None))
        if self._idle:
            self._idle = False
            self._wake.set()
        self._shed_pending = 0
        self.stats["gaps"] += 1

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._start()

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="audit-writer")

    async def flush(self) -> None:
        """Return once everything enqueued before this call is stored."""
        if self._task is None:
            return
        fut = self._loop.create_future()  # type: ignore[union-attr]
        # Past the capacity on purpose: a flush marker must not wait behind a full queue.
        self._items.append((_FLUSH, None, 0.0, fut))
        if self._idle:
            self._idle = False
            self._wake.set()
        await fut

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write everything queued (and any pending gap), close the sink."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("audit writer did not drain within %.0fs; abandoning the rest", timeout)
                self._abort = True
                await asyncio.wait_for(self._task, 10)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.sink.close)
        self._executor.shutdown(wait=True)
        metrics.QUEUE_DEPTH.set(0)

    # ---- writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._items
        while True:
            if not queue:
                if self._stopping and not self._shed_pending:
                    return
                self._idle = True
                self._wake.clear()
                await self._wake.wait()
            if self._linger and not self._stopping and len(queue) < self._max_batch:
                await asyncio.sleep(self._linger)
            n = min(len(queue), self._max_batch)
            items = [queue.popleft() for _ in range(n)]
            self._room.set()
            metrics.QUEUE_DEPTH.set(len(queue))
            if items:
                try:
                    await self._write(loop, items)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for i in items:
                        if i[3] is not None and not i[3].done():
                            i[3].set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    for i in items:
                        if i[3] is not None and not i[3].done():
                            i[3].set_result(None)
            if self._shed_pending:
                self._enqueue_gap()

    async def _write(self, loop: asyncio.AbstractEventLoop, items: list[Any]) -> None:
        """Seal one batch on the loop in small chunks, then store it in the writer thread.

        Sealing (canonical JSON + SHA-256, ~10 µs an event) is pure CPU: in a thread it
        would hold the GIL for a whole batch while requests wait for it, so it runs
        here, yielding to requests every SEAL_CHUNK events. Only the write and fsync,
        which release the GIL, go to the thread. The chain head lives in this task.
        """
        if not self._resumed:
            head = await loop.run_in_executor(self._executor, self.sink.resume, self.writer)
            if head is not None:
                self._seq, self._prev = head
            self._resumed = True
        batch: list[Sealed] = []
        for i in range(0, len(items), SEAL_CHUNK):
            sealed, self._seq, self._prev = self._seal(items[i : i + SEAL_CHUNK])
            batch.extend(sealed)
            # A call takes several loop turns; one bare yield would let every chunk cut in
            # between them. Letting a few turns through lets calls in flight finish first,
            # unless a backlog builds or a sync caller waits for this batch. (A timed pause
            # did the same at more CPU per call: one timer wake-up per chunk.)
            paced = not self._sync and len(self._items) < self._max_batch // 2
            for _ in range(SEAL_TURNS if paced else 1):
                await asyncio.sleep(0)
        if batch:
            await loop.run_in_executor(self._executor, self._store, batch)
        n = len(batch)
        self.stats["written"] += n
        self.stats["batches"] += 1
        metrics.WRITTEN.labels(self.sink.name).inc(n)
        metrics.BATCH_EVENTS.set(n)

    def _seal(self, items: list[tuple[str, Any, float, Any]]) -> tuple[list[Sealed], int, str]:
        """Chain and serialize items after the chain head: each event is serialized once."""
        seq, prev = self._seq, self._prev
        writer, key, ids = self.writer, self._key, self._ids
        writer_json = self._writer_json
        # The template writes prev_hash as it is: true of this writer's digests, checked
        # because a head resumed from a sink may hold anything.
        plain_prev = plain(prev)
        make = tuple.__new__
        batch: list[Sealed] = []
        for kind, fields, when, _ in items:
            if kind == _FLUSH:
                continue
            seq += 1
            micros = round(when * 1_000_000)
            event_id = ids.new(micros // 1000)
            stamp = format_micros(micros)
            sealed = None
            if kind == "decision" and plain_prev and len(fields) == _DECISION_SIZE:
                # The common event, written by a template (same bytes as the generic path).
                sealed = seal_decision(fields, event_id, seq, stamp, writer_json, prev, key)
            if sealed is None:
                rec = dict(fields)
                rec.pop("hash", None)
                rec.pop("hmac", None)
                rec["event_id"] = event_id
                rec["seq"] = seq
                rec["time"] = stamp
                rec["kind"] = kind
                rec["writer"] = writer
                rec["prev_hash"] = prev
                sealed = seal(rec, key)
            line, prev = sealed
            plain_prev = True  # a digest from here on
            batch.append(make(Sealed, (writer, seq, line)))
        return batch, seq, prev

    def _store(self, batch: list[Sealed]) -> None:
        """Write one sealed batch, retrying until it is stored (executor thread)."""
        delay = 0.05
        while True:
            try:
                self.sink.write(batch)
                return
            except Exception:
                self.stats["sink_errors"] += 1
                metrics.SINK_ERRORS.labels(self.sink.name).inc()
                log.exception("audit sink %s failed; retrying", self.sink.name)
                if self._abort:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
