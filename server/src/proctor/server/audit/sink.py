"""The seam between the audit writer and where its events go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Sealed(NamedTuple):
    """One chained, serialized event: its writer, seq and stored line (with newline)."""

    writer: str
    seq: int
    line: bytes


@dataclass(frozen=True, slots=True)
class SinkCaps:
    """What a sink can do; the writer reads this instead of probing the sink.

    durable: a write() that returns has the events on disk (or in a Redis, or in a spool
    on disk): `--audit-durability sync` may answer after it. A sink without it refuses
    sync durability.
    resumable: resume() can tell the last event stored for a writer name, so a writer
    that reuses a name continues its chain instead of forking it.
    """

    durable: bool = True
    resumable: bool = True


class Sink(Protocol):
    """Where the audit writer puts sealed events. The writer calls one method at a time,
    on the event loop; a sink that blocks (file I/O) does so in a thread of its own."""

    name: str
    caps: SinkCaps

    async def resume(self, writer: str) -> tuple[int, str] | None:
        """The (seq, hash) of the last event this sink holds for `writer`, or None."""
        ...

    async def write(self, batch: list[Sealed]) -> None:
        """Store the batch in order (one fsync or one round of calls for the whole batch).

        Returns once every event is stored; raises on failure (OSError, RedisUnavailable),
        leaving no partial batch visible or skipping on the retry what already landed, so
        the writer can hand it the same batch again: each event is stored exactly once.
        """
        ...

    async def close(self) -> None:
        """Flush and release files and connections."""
        ...
