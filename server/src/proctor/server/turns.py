"""Bulk work on the event loop takes turns (issue 19 §6, docs/limits.md).

One event loop serves every call. A unary call needs about eleven turns of the loop
from accept to answer, so whatever runs in every turn is paid eleven times by each
call in flight. Bulk work (slices of a full EvaluateBatch, the audit writer sealing a
burst of events) gives the loop back between slices with `Turns.pause()` instead of
`asyncio.sleep(0)`: one slice runs at a time across all of them, in the order they
paused, and a loop turn without bulk work follows each. With `sleep(0)` every batch
in progress and the writer each ran a slice in every turn, and a quiet caller beside
two full batches waited for about twenty-two slices per call (abuse bench: p50 2.8x
of quiet).
"""

from __future__ import annotations

import asyncio
from collections import deque


class Turns:
    """The order in which slices of bulk work run on one event loop."""

    def __init__(self) -> None:
        # Slices waiting for their turn, first come first served, and whether a hand-over
        # to the first of them is scheduled.
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._handing = False

    async def pause(self) -> None:
        """Between two slices: return when this one's turn has come."""
        loop = asyncio.get_running_loop()
        turn = loop.create_future()
        self._waiting.append(turn)
        if not self._handing:
            self._handing = True
            loop.call_soon(self._hand_over, False)
        # Cancelled while waiting, the future is cancelled too and the hand-over skips it.
        await turn

    def _hand_over(self, skip: bool) -> None:
        loop = asyncio.get_running_loop()
        if skip:  # the loop turn without bulk work
            loop.call_soon(self._hand_over, False)
            return
        waiting = self._waiting
        while waiting:
            turn = waiting.popleft()
            if not turn.done():  # done: its task was cancelled while waiting
                turn.set_result(None)
                break
        if waiting:
            loop.call_soon(self._hand_over, True)
        else:
            self._handing = False
