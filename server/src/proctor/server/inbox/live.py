"""Server-sent events for the pending page: "something changed, fetch the list again".

Steps of this process arrive at once from the ApprovalFeed. Steps of other
processes (several workers, or several servers on one Redis) are noticed by a
poll of the pending ids every POLL_SECONDS, run only while a page listens.
Each listener has a queue of one: a burst of steps is one refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from ..approvals.store import Approval, ApprovalError

POLL_SECONDS = 2.0
KEEPALIVE_SECONDS = 15.0
_CLOSED = "closed"


class LiveFeed:
    """Fans approval changes out to open event streams."""

    def __init__(self, pending_ids: Callable[[], Awaitable[frozenset[str]]],
                 poll_seconds: float = POLL_SECONDS) -> None:
        self._pending_ids = pending_ids
        self._poll_seconds = poll_seconds
        self._queues: set[asyncio.Queue[str]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def listeners(self) -> int:
        return len(self._queues)

    def on_step(self, op: str, approval: Approval) -> None:
        """An ApprovalFeed listener: tell every open stream."""
        self._notify(f"{op} {approval.approval_id}")

    def _notify(self, what: str) -> None:
        for q in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(what)

    def close(self) -> None:
        """End every open stream (the process drains)."""
        self._closed = True
        for q in self._queues:
            while not q.empty():
                q.get_nowait()
            q.put_nowait(_CLOSED)

    async def _poll(self) -> None:
        seen: frozenset[str] | None = None
        while self._queues:
            try:
                ids = await self._pending_ids()
            except ApprovalError:
                ids = seen or frozenset()
            if seen is not None and ids != seen:
                self._notify("changed")
            seen = ids
            await asyncio.sleep(self._poll_seconds)

    async def stream(self) -> AsyncIterator[str]:
        """The text/event-stream body of one listener, until it goes or the feed closes."""
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._queues.add(q)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        try:
            yield "retry: 2000\n\n"
            while not self._closed:
                try:
                    what = await asyncio.wait_for(q.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if what == _CLOSED:
                    return
                yield f"event: approvals\ndata: {what}\n\n"
        finally:
            self._queues.discard(q)
