"""Long-lived streams of one process (EvaluateStream, WatchPolicy, IngestDecisions).

A stream outlives any grace period, so a draining process ends its streams itself:
`OpenStreams.drain()` wakes every stream that is waiting for its client's next
message (or for a policy change) and makes each one return, status OK, before it
reads again. A stream in the middle of an item finishes it (answer written,
event recorded) first. Clients reconnect, to this replica's successor or another.

`admit()` bounds how many streams one process keeps open (--max-streams).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc

T = TypeVar("T")
_END: Any = object()


class OpenStreams:
    """The streams a process has open, and the drain that ends them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.draining = False
        self._waiting: set[asyncio.Task[Any]] = set()

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
        """Count one more open stream; RESOURCE_EXHAUSTED past the limit, UNAVAILABLE
        while draining. Pair with `release()` in a finally."""
        if self.draining:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is draining")
        if self.open >= self.limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{method}: at most {self.limit} open streams per process (--max-streams)")
        self.open += 1

    def release(self) -> None:
        self.open -= 1

    async def wait(self, awaitable: Awaitable[T]) -> T | None:
        """Await `awaitable`; None once the process drains (now or while waiting)."""
        if self.draining:
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            return None
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.draining:
                task.uncancel()
                return None
            raise
        finally:
            self._waiting.discard(task)

    async def next(self, messages: AsyncIterator[T]) -> T | None:
        """The client's next message; None when it half-closes or the process drains."""
        if self.draining:
            return None
        item = await self.wait(anext(messages, _END))
        return None if item is _END else item

    def drain(self) -> None:
        self.draining = True
        for task in list(self._waiting):
            task.cancel()
