"""The seam between the audit writer and where events go."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Sealed(NamedTuple):
    """One chained, serialized event: its writer, seq and stored line (with newline)."""

    writer: str
    seq: int
    line: bytes


class Sink(Protocol):
    """Where the background writer puts sealed events. Called from one thread at a time.

    A sink may also have `async write_offloaded(batch, offload) -> bool`, awaited on the
    event loop: it stores the usual batch through the offload thread (offload.py) and
    answers True, or answers False having stored nothing, and write() takes the batch.
    """

    name: str

    def resume(self, writer: str) -> tuple[int, str] | None:
        """The (seq, hash) of the last event this sink holds for `writer`, or None.

        Lets a writer that reuses a name continue its chain instead of forking it.
        """
        ...

    def write(self, batch: list[Sealed]) -> None:
        """Store the batch in order and durably (one fsync for the whole batch).

        Returns only when every event is on disk (or in Redis); raises on failure,
        leaving no partial batch visible, so the writer can retry the same lines.
        """
        ...

    def close(self) -> None:
        """Flush and release files and connections."""
        ...
