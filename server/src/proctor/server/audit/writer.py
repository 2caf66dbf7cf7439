"""The audit writer: a bounded queue and one task that seals, batches and writes.

`record()` (or `offer()`, its form without a coroutine) appends the event to a
bounded queue. One writer task, on the event loop, seals each event onto the
writer's hash chain (chain.py: seq, prev_hash, hash, HMAC) soon after it is queued,
a few events per turn of the loop so the calls in flight are not held up, and
gathers them into a batch (up to `max_batch`) that it hands to the sink in one
write (one fsync: group commit). Then it wakes the `sync` records and flushes of
that batch.

With async durability the writer lingers up to `linger` from a batch's first event
for the batch to gather (fewer, larger writes), sealing what comes meanwhile; a full
batch, a full queue, a flush or a close end the linger at once. Sync durability does
not linger.

Full queue (queued plus being written): `block` waits for room; `shed` drops the
event, counts it, and the next free slot carries a `gap` event with the count.

A sink that cannot write (disk full, I/O error, Redis away without a spool) keeps
its batch in the writer, which retries it with a growing pause; the queue behind
it is bounded as always. Meanwhile `refusal` names the error (under `block`), so
new decisions fail closed, and `on_health(False)` is called (main.py turns
proctor.v1.Decisions NOT_SERVING); both clear once a write succeeds. close()
waits at most its timeout for what is queued, then logs what it could not store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..turns import Turns
from . import metrics
from .chain import Chain
from .event import format_time
from .log import AuditClosed, AuditUnavailable
from .sink import Sealed, Sink

log = logging.getLogger("proctor.audit")

# Seconds a small batch gathers before it is written (async durability only).
DEFAULT_LINGER = 0.25
# Events sealed between two chances for the calls in flight to run (~8 us each).
_SEAL_SLICE = 16
# 1/this of the queue is kept for single events when bulk producers fill it (room_for).
_SINGLES_PART = 4
# Pauses between retries of a batch the sink failed to store.
_RETRY_FIRST, _RETRY_MAX = 0.05, 1.0
# How long close() waits for the sink to release its files or connections.
_SINK_CLOSE_TIMEOUT = 5.0
_FLUSH = "\x00flush"  # a flush request's place in the queue: seals to nothing

Item = tuple[str, Any, float, "asyncio.Future[None] | None"]


class AuditWriter:
    """The `AuditLog` that stores events: bounded queue + one writer in front of a sink.

    The caller hands `fields` over: it must not change the dict after record().
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
        on_health: Callable[[bool], None] | None = None,
        turns: Turns | None = None,
    ) -> None:
        if full_policy not in ("block", "shed"):
            raise ValueError(f"audit queue policy must be block or shed, not {full_policy!r}")
        if durability not in ("async", "sync"):
            raise ValueError(f"audit durability must be async or sync, not {durability!r}")
        if durability == "sync" and not sink.caps.durable:
            raise ValueError(f"the {sink.name} audit sink cannot serve sync durability")
        self.sink = sink
        self.writer = writer
        # Shared with the batches: bulk work on the loop takes turns (turns.py).
        self._turns = turns if turns is not None else Turns()
        self.on_health = on_health
        self._key = hmac_key
        self._shed = full_policy == "shed"
        self._sync = durability == "sync"
        self._capacity = max(1, queue_size)
        self._max_batch = max(1, max_batch)
        self._enough = min(self._max_batch, self._capacity)  # cuts a linger short
        # The queue's last part, left to single events by room_for() (bulk producers).
        self._bulk_limit = self._capacity - self._capacity // _SINGLES_PART
        self._linger = (0.0 if self._sync else DEFAULT_LINGER) if linger is None else linger
        self._queue: deque[Item] = deque()
        self._writing: list[Item] = []  # taken by the writer, not stored yet
        self._work = asyncio.Event()  # something is queued, or the linger is to end
        # The writer lingers with a batch begun: an event wakes it only once a slice's worth
        # is queued (waking it for every event, with a timer each time, cost 64 calls in
        # flight ~11% of their throughput).
        self._gathering = False
        self._urgent = False  # a flush, close or full queue asked: no linger till drained
        self._room = asyncio.Event()  # the writer stored a batch
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failure = ""  # the sink's last error while it cannot write
        self._shed_count = 0
        self._shed_first = self._shed_last = 0.0
        self._shed_why = ""
        self.stats = {"written": 0, "shed": 0, "gaps": 0, "batches": 0, "sink_errors": 0}

    # ---- AuditLog -----------------------------------------------------------------------

    @property
    def refusal(self) -> str:
        return "" if self._shed or not self._failure else f"audit: {self._failure}"

    @property
    def failure(self) -> str:
        """The sink's error while it cannot write, else ""."""
        return self._failure

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        if (self._sync or self._task is None or self._shed_count or self._closed
                or len(self._queue) + len(self._writing) >= self._capacity):
            return False
        self._enqueue((kind, fields, time.time(), None))
        return True

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        if self._closed:
            raise AuditClosed("the audit is closed")
        if self._task is None:
            self.start()
        if self._shed_count:
            self._enqueue_gap()
        while len(self._queue) + len(self._writing) >= self._capacity:
            if self._shed:
                self._count_shed(time.time())
                return
            if self._failure:  # no room, and none coming while the sink cannot write
                raise AuditUnavailable(self.refusal)
            self._room.clear()
            self._hurry()
            await self._room.wait()
            if self._closed:
                raise AuditClosed("the audit closed before the event found room")
        fut = asyncio.get_running_loop().create_future() if self._sync else None
        self._enqueue((kind, fields, time.time(), fut))
        if fut is not None:
            await fut

    async def room_for(self, n: int) -> None:
        """Wait (under `block`) until `n` events fit in the queue short of its last
        quarter. A bulk producer (EvaluateBatch) calls it before it records its events:
        a stream of full batches then fills the queue only that far, and a single
        decision recorded meanwhile finds room at once instead of waiting behind the
        batches for the writer (quiet callers waited a write or more for room). An empty
        queue takes any `n`; under `shed`, a closed audit or a sink that cannot write it
        does not wait (record() decides then)."""
        while (not self._shed and not self._closed and not self._failure
               and self._queue and len(self._queue) + len(self._writing) + n
               > self._bulk_limit):
            self._room.clear()
            self._hurry()
            await self._room.wait()

    async def flush(self) -> None:
        if self._task is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((_FLUSH, None, 0.0, fut))  # past capacity: never waits for room
        self._hurry()
        self._work.set()
        await fut

    def start(self) -> None:
        """Start the writer task on the running loop (record() does it when needed)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                 name="audit-writer")

    async def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._room.set()  # records waiting for room see the close
        if self._task is not None:
            self._hurry()
            self._work.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._abandon(timeout)
        try:
            await asyncio.wait_for(self.sink.close(), _SINK_CLOSE_TIMEOUT)
        except TimeoutError:
            log.error("audit sink %s did not close within %.0fs", self.sink.name,
                      _SINK_CLOSE_TIMEOUT)
        except Exception:
            log.exception("audit sink %s failed to close", self.sink.name)
        metrics.QUEUE_DEPTH.set(0)

    # ---- queue --------------------------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        queue = self._queue
        queue.append(item)
        if not self._gathering or len(queue) >= _SEAL_SLICE:
            self._work.set()

    def _hurry(self) -> None:
        """End the writer's linger now; no more until the queue is drained."""
        self._urgent = True
        self._work.set()

    def _count_shed(self, when: float) -> None:
        if not self._shed_count:
            self._shed_first = when
            self._shed_why = self._failure or "queue full"
        self._shed_count += 1
        self._shed_last = when
        self.stats["shed"] += 1
        metrics.SHED.inc()

    def _enqueue_gap(self) -> None:
        """Put the shed count into the chain where the events went missing, if there is room."""
        if len(self._queue) + len(self._writing) >= self._capacity:
            return
        n = self._shed_count
        fields = {"count": n, "outcome": "shed",
                  "reason": f"{n} audit events shed: {self._shed_why}",
                  "first_shed": format_time(self._shed_first),
                  "last_shed": format_time(self._shed_last)}
        self._shed_count = 0
        self.stats["gaps"] += 1
        self._enqueue(("gap", fields, self._shed_last, None))

    # ---- the writer ---------------------------------------------------------------------

    async def _run(self) -> None:
        head = None
        if self.sink.caps.resumable:
            head = await self._retrying(self.sink.resume, self.writer)
        chain = Chain(self.writer, self._key, head)
        loop = asyncio.get_running_loop()
        turns = self._turns
        batch: list[Sealed] = []  # the sealed events of self._writing, in order
        due = 0.0  # when the batch being gathered is written (loop time)
        timer: asyncio.TimerHandle | None = None  # ends the linger at `due`
        while True:
            if self._queue and len(self._writing) < self._max_batch:
                if not self._writing:
                    due = loop.time() + self._linger
                    if self._linger:
                        timer = loop.call_at(due, self._work.set)
                self._seal_slice(chain, batch)
                if self._queue and len(self._writing) < self._max_batch:
                    # A burst: let the calls in flight run (one bulk slice at a time, turns.py).
                    await turns.pause()
                    continue
            if self._writing:
                if (self._urgent or self._closed or len(self._writing) >= self._enough
                        or loop.time() >= due):
                    if timer is not None:
                        timer.cancel()
                        timer = None
                    await self._store(batch)
                    batch = []
                else:  # linger: seal what comes meanwhile (a slice at a time), write at `due`
                    self._work.clear()
                    self._gathering = True
                    await self._work.wait()
                    self._gathering = False
                continue
            if self._shed_count:
                self._enqueue_gap()
                continue
            if self._closed:
                return
            self._urgent = False  # whatever hurried the writer is served
            self._work.clear()
            await self._work.wait()

    def _seal_slice(self, chain: Chain, batch: list[Sealed]) -> None:
        """Move a few queued items to the batch being gathered, sealing them in order.

        Sealing as events come, a slice per turn of the loop, spreads its cost over the
        calls that record them; sealing a whole linger's events at write time held every
        call in flight for milliseconds (p99 about twice audit off at 8 in flight)."""
        queue, taken, seal = self._queue, self._writing, chain.seal
        for _ in range(min(len(queue), self._max_batch - len(taken), _SEAL_SLICE)):
            item = queue.popleft()
            taken.append(item)
            if item[0] != _FLUSH:
                batch.append(seal(item[0], item[1], item[2]))

    async def _store(self, batch: list[Sealed]) -> None:
        """Write the gathered batch (retrying until the sink takes it), then wake the
        sync records and flushes it holds and the records waiting for room."""
        metrics.QUEUE_DEPTH.set(len(self._queue))
        items = self._writing
        if batch:
            await self._retrying(self.sink.write, batch)
            self.stats["written"] += len(batch)
            self.stats["batches"] += 1
            metrics.WRITTEN.labels(self.sink.name).inc(len(batch))
            metrics.BATCH_EVENTS.set(len(batch))
        self._writing = []
        for _, _, _, fut in items:
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._room.set()

    async def _retrying(self, call: Callable[..., Any], arg: Any) -> Any:
        """`await call(arg)` until it succeeds, pausing longer after each failure; the
        failure is reported (refusal, health, log) until then."""
        pause = _RETRY_FIRST
        while True:
            try:
                result = await call(arg)
            except Exception as e:  # noqa: BLE001 - any sink error: keep the batch, retry
                self._failed(e)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX)
                continue
            if self._failure:
                self._recovered()
            return result

    def _failed(self, error: Exception) -> None:
        self.stats["sink_errors"] += 1
        metrics.SINK_ERRORS.labels(self.sink.name).inc()
        text = f"the {self.sink.name} sink cannot write: {error}"
        if text != self._failure:
            log.error("audit: %s; keeping %d events and retrying", text,
                      len(self._queue) + len(self._writing))
        first = not self._failure
        self._failure = text
        self._room.set()  # records waiting for room under block see the refusal
        if first and self.on_health is not None:
            self.on_health(False)

    def _recovered(self) -> None:
        log.warning("audit: the %s sink writes again", self.sink.name)
        self._failure = ""
        if self.on_health is not None:
            self.on_health(True)

    def _abandon(self, timeout: float) -> None:
        """close() waited long enough: stop the writer, log what is lost."""
        assert self._task is not None
        left = [*self._writing, *self._queue]
        lost = sum(1 for kind, *_ in left if kind != _FLUSH)
        log.error("audit writer could not store %d events within %.0fs (%s); they are lost",
                  lost, timeout, self._failure or "the sink is too slow")
        self._task.cancel()
        for _, _, _, fut in left:
            if fut is not None and not fut.done():
                fut.set_exception(AuditClosed("the audit closed before the event was stored"))
        self._queue.clear()
        self._writing = []
