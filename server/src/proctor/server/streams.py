"""Long-lived streams of one process (EvaluateStream, WatchPolicy, IngestDecisions;
StreamDecisions is counted, not drained).

A stream outlives any grace period, so a draining process ends its streams itself:
`OpenStreams.drain()` wakes every stream that is waiting for its client's next
message (or for a policy change) and makes each one return, status OK, before it
reads again. A stream in the middle of an item finishes it (answer written,
event recorded) first. Clients reconnect, to this replica's successor or another.

`admit()` bounds how many streams one process keeps open (--max-streams), and how
many of them one principal holds (--max-streams-per-principal), so one caller cannot
take them all. `CallerStreams` bounds one method's streams per caller on its own
(StreamDecisions: --max-audit-streams-per-principal), keyed by connection for the
anonymous caller of development mode.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc

from .auth import ANONYMOUS_ADMIN, caller

T = TypeVar("T")
_END: Any = object()


class OpenStreams:
    """The streams a process has open, and the drain that ends them."""

    def __init__(self, limit: int, per_principal: int | None = None) -> None:
        self.limit = limit
        self.per_principal = limit if per_principal is None else per_principal
        self.open = 0
        self.by_principal: Counter[str] = Counter()
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
        who = caller().id
        if self.by_principal[who] >= self.per_principal:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{method}: principal {who!r} has {self.per_principal} streams open already "
                "(--max-streams-per-principal)")
        self.open += 1
        self.by_principal[who] += 1

    def release(self) -> None:
        self.open -= 1
        who = caller().id
        self.by_principal[who] -= 1
        if self.by_principal[who] <= 0:
            del self.by_principal[who]

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


class CallerStreams:
    """Open streams of one method per caller: the principal, or, for the anonymous caller of
    development mode (every client is that one), its connection, so one client cannot take
    what the others need. Past `limit`, RESOURCE_EXHAUSTED naming `flag`."""

    def __init__(self, method: str, limit: int, flag: str) -> None:
        self.method, self.limit, self.flag = method, limit, flag
        self.open: Counter[str] = Counter()

    @staticmethod
    def key(context: grpc.aio.ServicerContext[Any, Any]) -> str:
        who = caller()
        if who.id == ANONYMOUS_ADMIN.id:
            return f"{who.id}@{context.peer() or ''}"
        return who.id

    async def admit(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Count one more stream of the caller; its key, to `release()` in a finally."""
        key = self.key(context)
        if self.open[key] >= self.limit:
            whose = (f"this connection ({key})" if "@" in key else f"principal {key!r}")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self.method}: {whose} has {self.limit} streams open already ({self.flag})")
        self.open[key] += 1
        return key

    def release(self, key: str) -> None:
        self.open[key] -= 1
        if self.open[key] <= 0:
            del self.open[key]
