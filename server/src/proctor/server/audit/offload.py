"""The audit writer's I/O without the GIL: a C thread (_offload.c) fed from the event loop.

The pipeline's writer task used to hand every batch to a Python executor thread.
That thread took the GIL on waking, after each write or fsync, and to hand its
result back, and each time the event loop and it waited for each other: the calls
in flight during a batch's write were the slowest ones (see _offload.c). Now the
file sink hands the batch's list over as it is, and the C thread writes and fsyncs
it without the GIL; its outcome comes back through an eventfd the loop watches.
The loop touches none of the batch's events: they were written up to a linger
earlier and are out of the cache, and touching each cost ~0.3 us, a batch's worth
at once. Anything unusual (a new segment, an error) still goes to the sink's
blocking write() in the executor.

The Redis sink stays in the executor: the same thread packing and sending its
append.lua calls measured worse at 8 in flight (p99 1.05x and 1.11x against the
executor, switched in one process, 10 and 12 rounds) and no different at one in
flight (1.01x).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..twins import twin

_offload_c = twin("proctor.server.audit._offload")


class Offload:
    """One C I/O thread whose results resolve futures on `loop`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        assert _offload_c is not None
        self._loop = loop
        self._thread = _offload_c.Offload()
        self._fd = self._thread.fileno()
        loop.add_reader(self._fd, self._reap)  # NotImplementedError: no selector loop

    def write(self, fd: int, items: list[Any], fsync: bool,
              room: int) -> asyncio.Future[tuple[int, int, int]]:
        """Write every item's line (a Sealed, or bytes) to fd, then fdatasync if asked:
        (total bytes, bytes written, errno or 0). Nothing is written when the total is
        more than `room`.

        `items` is a list the caller leaves unchanged until the future is done: the
        thread reads it without the GIL."""
        fut: asyncio.Future[tuple[int, int, int]] = self._loop.create_future()
        self._thread.write(fd, items, fsync, room, fut)
        return fut

    def _reap(self) -> None:
        for fut, result in self._thread.done():
            if not fut.done():  # a writer cancelled while waiting no longer wants it
                fut.set_result(result)

    async def close(self, executor: Any) -> None:
        """Wait for the jobs still queued (a cancelled writer's), then stop the thread:
        the join runs in `executor`, not on the loop."""
        await self._loop.run_in_executor(executor, self._thread.close)
        self._loop.remove_reader(self._fd)
        self._reap()


def start(loop: asyncio.AbstractEventLoop) -> Offload | None:
    """An Offload on `loop`, or None (the C twin is not built, PROCTOR_PURE_PYTHON=1, or a
    loop that cannot watch a file descriptor): sinks then write in the executor only."""
    if _offload_c is None:
        return None
    try:
        return Offload(loop)
    except (NotImplementedError, OSError):
        return None
