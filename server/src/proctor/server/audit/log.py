"""The seam between the request path and the audit: `AuditLog`.

Services hold an `AuditLog` and know nothing of queues, chains or sinks. The one
implementation that stores events is `writer.AuditWriter`; `NullAudit` records
nothing (unit tests, benchmarks of the audit's cost).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol


class AuditClosed(RuntimeError):
    """record() after close(), or a record still waiting when close() gave up."""


class AuditUnavailable(RuntimeError):
    """The audit cannot take the event: its sink cannot write and the queue policy is
    `block`. The message says why (the sink's error)."""


class AuditLog(Protocol):
    """Where the request path records events: decisions, budget steps, approvals, reloads."""

    @property
    def refusal(self) -> str:
        """"" while events can be recorded; else why not (the sink cannot write and the
        queue policy is `block`). Decisions fail closed with it (UNAVAILABLE) before
        answering, so no answered decision waits on a sink that cannot take it."""
        ...

    def start(self) -> None:
        """Start writing (on the running event loop); record() starts it when needed."""
        ...

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        """Enqueue the event now, without waiting, and answer True; or answer False having
        done nothing (sync durability, a full queue, a gap to write first): the caller
        then awaits record(). The caller hands `fields` over and must not change it."""
        ...

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        """Enqueue the event, waiting for room when the queue is full under `block` (shed
        under `shed`: counted and recorded as a gap); with sync durability, return once
        it is stored. AuditClosed after close()."""
        ...

    async def room_for(self, n: int) -> None:
        """Return once `n` events fit in the queue short of its last part, which is kept for
        single events: a bulk producer (EvaluateBatch) waits here before recording."""
        ...

    async def flush(self) -> None:
        """Return once every event recorded before this call is stored."""
        ...

    async def close(self, timeout: float = ...) -> None:
        """Stop taking events, store what is queued within `timeout` seconds (what cannot
        be stored by then is logged as lost), and release the sink."""
        ...


class NullAudit:
    """Records nothing."""

    refusal = ""

    def start(self) -> None:
        return None

    def offer(self, kind: str, fields: dict[str, Any]) -> bool:
        del kind, fields
        return True

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        del kind, fields

    async def room_for(self, n: int) -> None:
        del n

    async def flush(self) -> None:
        return None

    async def close(self, timeout: float = 0.0) -> None:
        del timeout


def offer_of(audit: Any) -> Callable[[str, dict[str, Any]], bool]:
    """`audit.offer`, or for a recorder without one (a test's) a stand-in that always
    answers False: the caller then awaits `audit.record()`."""
    offer: Callable[[str, dict[str, Any]], bool] | None = getattr(audit, "offer", None)
    return offer if offer is not None else (lambda kind, fields: False)


async def _no_wait(n: int) -> None:
    del n


def room_of(audit: Any) -> Callable[[int], Awaitable[None]]:
    """`audit.room_for`, or for a recorder without one (a test's) a stand-in that does
    not wait."""
    room: Callable[[int], Awaitable[None]] | None = getattr(audit, "room_for", None)
    return room if room is not None else _no_wait


def refusal_of(audit: Any) -> str:
    """`audit.refusal`, or "" for a recorder without one (a test's)."""
    return str(getattr(audit, "refusal", ""))
