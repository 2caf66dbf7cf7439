"""The shared tail behind Audit.StreamDecisions: one follower per process reads new events once.

A StreamDecisions stream reads the backlog from its cursor on its own reader, in
small chunks. When a read ends short (it has reached the end of the audit) and the
stream follows, it joins the tail: the tail's task reads the joiner's last items
right after its own read, so the joiner is at or past the tail's position, and
hands back the ring index to follow from. From then on the stream takes events
from the tail's ring, skipping what its own reader had read already
(`has_read`) and acking each into its own reader, so its cursors are the ones it
would have computed alone. The tail parses each event and builds its message
once, whatever the number of streams.

The ring is bounded (`size` events). A stream that falls further behind than the
ring (its next event was dropped) goes back to its own reader from just after what
it acked (`resume`), reads on its own until it reaches the end, and joins again:
nothing lost, nothing repeated. The tail runs only while someone follows it.

`SendTurn`: every StreamDecisions send and every backlog read of the process takes
one shared turn, so audit streams, which may lag, hold a decision up by about one
message at most, however many there are, and together take at most a quarter of
the process's time (abuse_bench's streams, 16 replaying from the start and
following: Evaluate's p50 2.1x of quiet at half, 1.1-1.6x at a quarter, on a
loaded 2-core VM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from .reader import Item

log = logging.getLogger("proctor.audit")

# Events per read (the tail's, a joiner's, a stream's backlog): a read parses them in a
# worker thread, holding the GIL, so the event loop, for a fraction of a millisecond only.
READ_BATCH = 16
RING_EVENTS = 4096


class Reader(Protocol):
    def poll(self, limit: int = 1000) -> list[Item]: ...
    def ack(self, item: Item) -> None: ...
    def cursor(self) -> str: ...
    def has_read(self, item: Item) -> bool: ...
    def resume(self) -> None: ...
    def fork(self) -> Reader: ...
    def close(self) -> None: ...


class Entry:
    """One event of the ring. Its message (without a cursor: each stream sets its own) is
    built once, by the first stream that sends it, on the event loop: one event's work
    at a time there, where a worker thread building a whole read's would hold the GIL
    and so the loop for as long."""

    __slots__ = ("_build", "_message", "item")

    def __init__(self, item: Item, build: Callable[[dict[str, Any]], Any]) -> None:
        self.item, self._build, self._message = item, build, None

    @property
    def message(self) -> Any:
        if self._message is None:
            self._message = self._build(self.item.event)
        return self._message


class Behind:
    """The ring no longer holds the index asked for."""


BEHIND = Behind()
_Join = tuple[Reader, "asyncio.Future[tuple[list[Item], int | None]]"]


class SendTurn:
    """One StreamDecisions send (or backlog read) at a time across the process, and at
    most `share` of the time.

    A holder keeps the turn until its send completes or `hold_s` passes, whichever is
    first, so a client that stops reading (its send waits on flow control) cannot
    stall the other streams. Turns held `share` of a `window_s` window wait for the
    next window: streaming with no end (a backlog replayed, many followers) leaves the
    rest of the process's time to decisions. A turn's time is wall time, the loop's
    other work during a send included, so the busier the process, the fewer sends.

    `deciding` (when given) says whether decisions are being served: the share is kept
    only then, so an audit consumer replaying a backlog on an idle server is not slowed
    to a quarter of its speed for nobody's sake."""

    def __init__(self, hold_s: float = 0.005, share: float = 0.25,
                 window_s: float = 0.01, deciding: Callable[[], bool] | None = None) -> None:
        self.hold_s, self.share, self.window_s = hold_s, share, window_s
        self.deciding = deciding
        self._lock: asyncio.Lock | None = None
        self._window = 0.0  # when the current window started
        self._held = 0.0  # turn time in it

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        lock = self._lock
        await lock.acquire()
        loop = asyncio.get_running_loop()
        try:
            now = loop.time()
            if now - self._window >= self.window_s:
                self._window, self._held = now, 0.0
            elif self._held >= self.share * self.window_s and (
                    self.deciding is None or self.deciding()):
                await asyncio.sleep(self._window + self.window_s - now)
                self._window, self._held = loop.time(), 0.0
        except BaseException:
            lock.release()
            raise
        start = loop.time()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._held += loop.time() - start
                lock.release()

        timer = loop.call_later(self.hold_s, release)
        try:
            yield
        finally:
            timer.cancel()
            release()


class AuditTail:
    """The process's one reader of new audit events, and the ring its followers share."""

    def __init__(self, build: Callable[[dict[str, Any]], Any], poll_interval: float = 0.1,
                 size: int = RING_EVENTS) -> None:
        self.build, self.poll_interval, self.size = build, poll_interval, size
        self._ring: deque[Entry] = deque()
        self._first = 0  # the ring index of _ring[0]; only grows
        self._reader: Reader | None = None
        self._members = 0
        self._joins: list[_Join] = []
        self._task: asyncio.Task[None] | None = None
        self._more: asyncio.Event | None = None
        self._kick: asyncio.Event | None = None

    @property
    def head(self) -> int:
        """The ring index the next event read will take."""
        return self._first + len(self._ring)

    @property
    def members(self) -> int:
        return self._members

    def get(self, index: int) -> Entry | Behind | None:
        """The entry at `index`; None when it is not read yet, BEHIND when it was dropped."""
        if index < self._first:
            return BEHIND
        if index >= self.head:
            return None
        return self._ring[index - self._first]

    async def wait(self, index: int) -> None:
        """Until the ring holds `index` (or has dropped it)."""
        while index >= self.head:
            if self._more is None:
                self._more = asyncio.Event()
            await self._more.wait()

    async def join(self, reader: Reader) -> tuple[list[Item], int | None]:
        """Hand over a reader that has just read to the end: its last items and the ring
        index to follow from, or None for the index when it found more (read on alone).
        A joined caller must `leave()` when it stops following."""
        fut: asyncio.Future[tuple[list[Item], int | None]] = (
            asyncio.get_running_loop().create_future())
        self._joins.append((reader, fut))
        self._start()
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled after the tail counted it in: leave, or the tail would run forever.
            if fut.done() and not fut.cancelled() and fut.result()[1] is not None:
                self.leave()
            raise

    def leave(self) -> None:
        self._members -= 1

    async def follow(self, reader: Reader) -> AsyncGenerator[Item | Entry, None]:
        """Items `reader` has read to the end, then entries of the tail that `reader` has
        not read, until the stream falls behind the ring (then it returns, the reader
        resumed after what was acked) or is closed."""
        backlog, index = await self.join(reader)
        for item in backlog:
            yield item
        if index is None:
            return
        try:
            while True:
                entry = self.get(index)
                if entry is None:
                    await self.wait(index)
                    continue
                if isinstance(entry, Behind):
                    reader.resume()
                    return
                index += 1
                if not reader.has_read(entry.item):
                    yield entry
        finally:
            self.leave()

    # ---- the tail's task ---------------------------------------------------------------

    def _start(self) -> None:
        if self._kick is None:
            self._kick = asyncio.Event()
        self._kick.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        kick = self._kick
        assert kick is not None
        try:
            while self._members > 0 or self._joins:
                joins, self._joins = self._joins, []
                kick.clear()
                try:
                    entries, results = await asyncio.to_thread(self._step, joins)
                except Exception as exc:  # noqa: BLE001 - the tail retries whatever failed
                    log.warning("audit tail: read failed (%s); retrying", exc)
                    self._joins[:0] = [(r, f) for r, f in joins if not f.done()]
                    await asyncio.sleep(max(self.poll_interval, 0.5))
                    continue
                self._append(entries)
                for (_, fut), result in zip(joins, results, strict=True):
                    if isinstance(result, BaseException):
                        if not fut.done():
                            fut.set_exception(result)
                        continue
                    if fut.done():  # the stream went away while joining
                        continue
                    if result[1] is not None:
                        self._members += 1
                    fut.set_result(result)
                if len(entries) < READ_BATCH and not self._joins:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(kick.wait(), self.poll_interval)
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._first = self.head
        self._ring.clear()
        for _, fut in self._joins:
            if not fut.done():
                fut.cancel()
        self._joins = []

    def _step(self, joins: list[_Join]) -> tuple[
            list[Entry], list[tuple[list[Item], int | None] | BaseException]]:
        """In a worker thread: the tail's read, then each joiner's last read after it."""
        entries: list[Entry] = []
        if self._reader is not None:
            entries = [Entry(i, self.build) for i in self._reader.poll(READ_BATCH)]
        results: list[tuple[list[Item], int | None] | BaseException] = []
        for reader, fut in joins:
            if fut.done():
                results.append(([], None))
                continue
            try:
                items = reader.poll(READ_BATCH)
                if len(items) < READ_BATCH and self._reader is None:
                    self._reader = reader.fork()
            except Exception as exc:  # noqa: BLE001 - that joiner's stream reports it
                results.append(exc)
                continue
            at_end = len(items) < READ_BATCH
            results.append((items, self.head + len(entries) if at_end else None))
        return entries, results

    def _append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self._ring.extend(entries)
        while len(self._ring) > self.size:
            self._ring.popleft()
            self._first += 1
        more, self._more = self._more, None
        if more is not None:
            more.set()
