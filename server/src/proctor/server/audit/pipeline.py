"""The audit pipeline seen by the request path: a bounded queue and one background writer.

`record()` (or `offer()`, its coroutine-free form) appends a small tuple to a
bounded deque and, once per loop turn, schedules the sealing step with
`call_soon`. That step runs after the recording call's handler has returned and
its answer is on its way: it chains and seals (serializes once, in C where
built) what is waiting, at most SEAL_CHUNK events a turn, so the work lands
between calls instead of in bursts that delay the next ones. The common event
skips the step: `offer()` seals decisions itself, in C (a step of their own cost
~5 µs more per call under load; measured at 8 in flight, the audit's CPU per call
fell from ~+57 to ~+19 µs): at once when the loop is idle, INLINE_BATCH at a time
when it is busy (one event alone seals cache-cold; at 64 in flight, +2% calls/s,
~11 µs less CPU a call). A writer task takes
the sealed lines (up to `max_batch`; with async durability after lingering up to
250 ms so batches, and fsyncs, stay few; the whole list when it fits, so the loop
touches none of its events) and has them written with one fsync: by the C I/O
thread of offload.py when the sink can (the file sink's usual batch), else by a
dedicated one-thread executor; then it wakes the `sync` waiters and flushes of the
batch: group commit. Stored events are freed two per recorded event, not at once.
The chain state (seq, prev_hash) is touched only on the event loop, so no lock is
ever held across I/O.

Full queue (unsealed plus sealed-but-unwritten events): `block` awaits room;
`shed` drops the event, counts it, and the next free slot carries a `gap` event
with the count, so the chain shows the hole exactly where it happened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..ids import new_generator
from ..loop_idle import pending_callbacks
from . import event, metrics, offload
from .chain import FLUSH as _FLUSH
from .chain import seal_items
from .event import GENESIS, format_time, quote
from .sink import Sealed, Sink

log = logging.getLogger("proctor.audit")

# Seconds a small batch gathers before it is written (async durability only; a batch
# of max_batch goes at once). Each batch costs the event loop a hand-off to the
# writer thread and back, and the call in flight meanwhile pays for it: at 20 ms,
# the audit raised sequential Evaluate p99 from ~1.04-1.09x the echo floor to
# ~1.22-1.29x (3 hash seeds each, one run); at 250 ms, 1.09x, as with audit off.
DEFAULT_LINGER = 0.25
SEAL_CHUNK = 16  # events sealed per loop turn (~1.5 µs each warm): the rest wait a turn
# decisions offer() lets gather under load before it seals them in one C call (a run
# starts cache-cold, the rest is warm; see offer): at 64 in flight +2% throughput
INLINE_BATCH = 8
# Stored events offer()/record() free per call (see _retire): more than the one event a
# call adds, so what is kept does not grow.
FREE_PER_CALL = 2


def _name_native_thread() -> None:
    """Name the writer thread for top -H / ps (Linux; best effort)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, b"audit-writer", 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def offer_of(audit: Any) -> Callable[[str, dict[str, Any]], bool]:
    """`audit.offer`, or for an audit without one (a test's recorder) a stand-in that
    always answers False: the caller then awaits `audit.record()`."""
    offer: Callable[[str, dict[str, Any]], bool] | None = getattr(audit, "offer", None)
    return offer if offer is not None else (lambda kind, fields: False)


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
        # (kind, fields, time, sync future or None), oldest first, not sealed yet; the
        # request path appends, the sealing step pops: both on the event loop, so no lock.
        self._items: deque[tuple[str, Any, float, Any]] = deque()
        self._sealed: list[Sealed] = []  # sealed, not yet taken by the writer
        self._spent: deque[list[Sealed]] = deque()  # stored, freed a few per call (_retire)
        # (lines sealed up to and including its event, future): resolved once that many
        # lines are stored (sync records, flushes).
        self._waiters: list[tuple[int, Any]] = []
        self._sealed_total = 0
        self._seal_scheduled = False
        self._capacity = max(1, queue_size)
        self._wake = asyncio.Event()  # set when the idle writer has work
        # set when the lingering writer should write now: a batch's worth waits, the
        # queue is full (a record() waits for room), a flush or close asks
        self._now = asyncio.Event()
        self._urgent = False  # a flush, a close or a full queue asked: no linger till drained
        self._room = asyncio.Event()  # set when the writer took lines (block policy)
        self._idle = False
        self._stopping = False
        self._shed = full_policy == "shed"
        self._sync = durability == "sync"
        self._max_batch = max(1, max_batch)
        self._enough = min(self._max_batch, self._capacity)  # cuts a linger short
        # async: let a batch gather for up to `linger` so the writer wakes (and fsyncs) per
        # batch, not per event; an event reaches disk within ~linger + one fsync.
        # sync: no wait (records pile up while the previous batch's fsync is in flight).
        self._linger = (0.0 if self._sync else DEFAULT_LINGER) if linger is None else linger
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="audit-writer", initializer=_name_native_thread
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._offload: offload.Offload | None = None  # the sink's writes off the GIL
        self._ready: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._abort = False
        # loop-thread state
        self._shed_pending = 0
        self._shed_first = 0.0
        self._shed_last = 0.0
        # chain state (event loop only)
        self._ids = new_generator()
        self._seq = 0
        self._prev = GENESIS
        self._writer_json = quote(writer)
        self._resumed = False
        self._inline = False
        self.stats = {"written": 0, "shed": 0, "gaps": 0, "batches": 0, "sink_errors": 0}

    # ---- request path -------------------------------------------------------------------

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Enqueue one event; with sync durability, return once it is on disk."""
        if self._closed:
            raise AuditClosed("audit pipeline is closed")
        if self._task is None:
            self._start()
        if self._spent:
            self._free_spent()
        items = self._items
        if self._shed_pending:
            self._enqueue_gap()
        if len(items) + len(self._sealed) >= self._capacity:
            if self._shed:
                self._count_shed(time.time())
                return
            while len(items) + len(self._sealed) >= self._capacity:
                self._room.clear()
                self._hurry()
                await self._room.wait()
        fut = self._loop.create_future() if self._sync else None  # type: ignore[union-attr]
        items.append((kind, fields, time.time(), fut))
        if len(items) + len(self._sealed) >= self._enough:
            self._now.set()
        if not self._seal_scheduled:
            self._schedule_seal()
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
                or len(items) + len(self._sealed) >= self._capacity):
            return False
        if self._spent:
            self._free_spent()
        item = (kind, fields, time.time(), None)
        if self._inline and kind == "decision":
            # Decisions are sealed here, in C, never by a sealing step of their own (a
            # loop callback and its bookkeeping, ~5 µs an event under load). On an idle
            # loop (nothing else pending) at once, so one call at a time pays only for
            # its own event. Under load INLINE_BATCH at a time: one event alone seals
            # cache-cold (~11 µs at 64 in flight), the rest of a run warm (~2 µs). What
            # is left when the writer takes a batch, it seals itself.
            ready = self._ready
            idle = ready is None or not ready
            taken = 0
            if idle and not items:
                taken, self._seq, self._prev = event.seal_decisions(  # type: ignore[misc]
                    [item], 0, self._seq, self._prev, self.writer, self._writer_json,
                    self._ids, Sealed, self._sealed)
                self._sealed_total += taken
            if not taken:  # under load, or the template declined it (generic encoder)
                items.append(item)
                if idle or len(items) >= INLINE_BATCH:
                    self._seal_waiting(len(items))
            if self._idle:
                self._idle = False
                self._wake.set()
            elif len(items) + len(self._sealed) >= self._enough:
                self._now.set()
            return True
        items.append(item)
        if len(items) + len(self._sealed) >= self._enough:
            self._now.set()
        if not self._seal_scheduled:
            self._schedule_seal()
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
        if len(self._items) + len(self._sealed) >= self._capacity:
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
        if not self._seal_scheduled:
            self._schedule_seal()
        self._shed_pending = 0
        self.stats["gaps"] += 1

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._start()

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = pending_callbacks(self._loop)
        if hasattr(self.sink, "write_offloaded"):
            self._offload = offload.start(self._loop)
        self._task = self._loop.create_task(self._run(), name="audit-writer")

    async def flush(self) -> None:
        """Return once everything enqueued before this call is stored."""
        if self._task is None:
            return
        fut = self._loop.create_future()  # type: ignore[union-attr]
        # Past the capacity on purpose: a flush marker must not wait behind a full queue.
        self._items.append((_FLUSH, None, 0.0, fut))
        self._hurry()
        if not self._seal_scheduled:
            self._schedule_seal()
        await fut

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, write everything queued (and any pending gap), close the sink."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            self._hurry()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                log.error("audit writer did not drain within %.0fs; abandoning the rest", timeout)
                self._abort = True
                await asyncio.wait_for(self._task, 10)
        loop = asyncio.get_running_loop()
        if self._offload is not None:  # its last job ends before the sink closes the file
            await self._offload.close(self._executor)
        await loop.run_in_executor(self._executor, self.sink.close)
        self._executor.shutdown(wait=True)
        self._spent.clear()
        metrics.QUEUE_DEPTH.set(0)

    def _hurry(self) -> None:
        """End the writer's linger now; no more until the queue is drained (loop thread)."""
        self._urgent = True
        self._now.set()

    # ---- sealing (event loop, between calls) --------------------------------------------

    def _schedule_seal(self) -> None:
        self._seal_scheduled = True
        self._loop.call_soon(self._seal_step)  # type: ignore[union-attr]

    def _seal_step(self) -> None:
        """Seal up to SEAL_CHUNK waiting events; the rest in a later turn; wake the writer."""
        self._seal_scheduled = False
        if self._resumed:  # before that the writer seals, once it knows the chain head
            self._seal_waiting(SEAL_CHUNK)
            if self._items:
                self._schedule_seal()
        if self._idle:
            self._idle = False
            self._wake.set()

    def _seal_waiting(self, limit: int) -> None:
        items = self._items
        n = min(len(items), limit)
        if n <= 0:
            return
        chunk = [items.popleft() for _ in range(n)]
        sealed, self._seq, self._prev = self._seal(chunk)
        self._sealed += sealed
        total = self._sealed_total
        for kind, _, _, fut in chunk:
            if kind != _FLUSH:
                total += 1
            if fut is not None:
                self._waiters.append((total, fut))
        self._sealed_total = total

    # ---- writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        written = 0  # lines stored, counted like _sealed_total
        # The chain continues from what the sink holds for this writer name; until then
        # the sealing steps leave events waiting.
        head = await loop.run_in_executor(self._executor, self.sink.resume, self.writer)
        if head is not None:
            self._seq, self._prev = head
        self._resumed = True
        # offer() seals decision events itself once the chain head is known, when the C
        # template serves and no HMAC is asked (else they wait for a sealing step).
        self._inline = self._key is None and event.seal_decisions is not None
        while True:
            if not (self._items or self._sealed or self._waiters):
                if self._stopping and not self._shed_pending:
                    return
                self._idle = True
                self._urgent = False  # whatever hurried the writer is served: all is written
                self._wake.clear()
                await self._wake.wait()
            if (self._linger and not self._stopping and not self._urgent
                    and len(self._items) + len(self._sealed) < self._enough):
                # A timer rather than wait_for(): no task and no TimeoutError a batch.
                self._now.clear()
                timer = loop.call_later(self._linger, self._now.set)
                await self._now.wait()
                timer.cancel()
            # What the sealing steps have not reached yet (a backlog, or sync durability's
            # waiter) goes into this batch: the writer never waits on the steps.
            self._seal_waiting(self._max_batch - len(self._sealed))
            # The whole list changes hands when it fits (the usual case): a slice would
            # touch every event, long out of the cache (~0.3 us each, ~0.15 ms a batch of
            # 500, which the call in flight waited for).
            if len(self._sealed) <= self._max_batch:
                batch, self._sealed = self._sealed, []
            else:
                batch = self._sealed[: self._max_batch]
                del self._sealed[: len(batch)]
            self._room.set()
            metrics.QUEUE_DEPTH.set(len(self._items) + len(self._sealed))
            if batch:
                stored = True
                try:
                    await self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    # Only an abandoned close (or cancellation) gets here: _store retries.
                    for _, fut in self._waiters:
                        if not fut.done():
                            fut.set_exception(exc)
                    self._waiters.clear()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    stored = False
                written += len(batch)
                self._retire(batch)
                if stored:
                    self.stats["written"] += len(batch)
                    self.stats["batches"] += 1
                    metrics.WRITTEN.labels(self.sink.name).inc(len(batch))
                    metrics.BATCH_EVENTS.set(len(batch))
            done = 0
            for mark, fut in self._waiters:
                if mark > written:
                    break
                done += 1
                if not fut.done():
                    fut.set_result(None)
            del self._waiters[:done]
            if self._shed_pending:
                self._enqueue_gap()

    def _free_spent(self) -> None:
        """Free FREE_PER_CALL of the stored events (see _retire)."""
        oldest = self._spent[0]
        del oldest[-FREE_PER_CALL:]
        if not oldest:
            self._spent.popleft()

    def _retire(self, batch: list[Sealed]) -> None:
        """Keep a stored batch's events to be freed a few per recorded event (offer,
        record) rather than all at once: freeing a few hundred events (cold, each line
        a malloc'd block) took the loop ~0.06-0.1 ms, which the call in flight waited
        for. Each call frees more than the one event it adds, so what is kept does not
        grow: at most what was recorded between two of the writer's turns."""
        self._spent.append(batch)

    def _seal(self, items: list[tuple[str, Any, float, Any]]) -> tuple[list[Sealed], int, str]:
        """Chain and serialize items after the chain head (server/audit/chain.py)."""
        return seal_items(items, self._seq, self._prev, self.writer, self._writer_json,
                          self._key, self._ids)

    async def _write(self, batch: list[Sealed]) -> None:
        """Store one batch: through the offload thread when the sink can take it that way
        (the usual batch), else with the sink's write() in the executor."""
        off = self._offload
        if off is not None:
            try:
                if await self.sink.write_offloaded(batch, off):  # type: ignore[attr-defined]
                    return
            except Exception:  # the executor's write() retries it and reports what fails
                log.exception("audit sink %s: offloaded write failed", self.sink.name)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._store, batch)

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
