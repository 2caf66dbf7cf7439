"""Fair shares of the event loop between callers (issue 19 §6, docs/limits.md).

One event loop serves every call's steps first come first served. A caller (its
principal; in the development mode, where everyone is the anonymous principal, its
connection) is active while it has a call in progress or had one within LINGER_NS
(a sequential caller spends most of its time between calls).

EvaluateBatch calls are held: each caller's batches in progress are counted from
handler entry until grpc reports the RPC done (its answer sent), a batch weighing one
call per ITEMS_PER_CALL items and at most the whole share. While another caller is
active, a caller at its share (--fair-share-calls) parks its next batch at handler
entry until one of its own ends; a parked call costs the loop nothing, keeps its
deadline (grpc cancels it), and past --fair-share-queue parked calls the next answers
RESOURCE_EXHAUSTED. Alone, a caller is never held. `shared()` also tells a batch to
give the loop back more often while others are active, and its `turns` (turns.py) are
how it gives it back then.

Evaluate calls are only noted (`seen`, as anyone's), never held: measured, the wait a flood of
them causes is in gRPC's queue of calls not yet accepted (one at a time, over every
connection), ahead of any handler; holding them at the handler made it worse.
--max-calls-per-connection (HTTP/2 MAX_CONCURRENT_STREAMS) is the lever there.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from functools import partial
from typing import Any

import grpc

from .auth import caller
from .auth.principal import BY_NOTHING
from .settings import DEFAULT_FAIR_SHARE_CALLS, DEFAULT_FAIR_SHARE_QUEUE
from .turns import Turns

# A caller still counts as active this long after its last call ended (nanoseconds):
# a sequential caller is between calls (its own round trip) most of the time.
LINGER_NS = 100_000_000
# A batch weighs one call per this many items (an item costs about what a call's
# decision does; the call's own gRPC steps are what a batch saves).
ITEMS_PER_CALL = 16


def _key(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The caller: its principal, or in the development mode its connection."""
    principal = caller()
    return principal.id if principal.method != BY_NOTHING else context.peer()


class _Parked:
    """A call waiting for its caller's share; `admitted` once it holds its slot."""

    __slots__ = ("future", "weight", "admitted")

    def __init__(self, future: asyncio.Future[None], weight: int) -> None:
        self.future = future
        self.weight = weight
        self.admitted = False


class FairShare:
    """Counts each caller's calls in progress and parks those past its share."""

    def __init__(self, calls: int = DEFAULT_FAIR_SHARE_CALLS,
                 queue: int = DEFAULT_FAIR_SHARE_QUEUE, turns: Turns | None = None) -> None:
        self.calls = max(1, calls)
        self.queue = max(0, queue)
        self._active: dict[str, int] = {}  # caller -> weight in progress (> 0)
        self._idle: dict[str, int] = {}  # caller -> when its last call ended (ns)
        self._parked: dict[str, deque[_Parked]] = {}
        self._prune_at = 64
        self._evaluated = -LINGER_NS  # when an Evaluate call last started (ns)
        self.turns = turns if turns is not None else Turns()
        self.stats = {"parked": 0, "refused": 0}

    def enter(self, context: grpc.aio.ServicerContext[Any, Any],
              items: int = 1) -> Any:
        """Count this call (`items` decisions) for its caller until the RPC is done.

        None when it may run now (the common case costs no coroutine); otherwise an
        awaitable that returns once it may, or aborts RESOURCE_EXHAUSTED.
        """
        key = _key(context)
        weight = 1 if items <= ITEMS_PER_CALL else min(self.calls, items // ITEMS_PER_CALL)
        held = self._active.get(key, 0)
        if (held + weight <= self.calls and key not in self._parked) or self._alone(key):
            self._active[key] = held + weight
            # grpc-stubs types the callback as a class; grpc calls it with the context.
            context.add_done_callback(partial(self._done, key, weight))  # type: ignore[arg-type]
            return None
        return self._park(context, key, weight)

    def seen(self) -> None:
        """Note a call that is not held (Evaluate). Whose it is goes unasked: the peer
        costs a call into gRPC (64 in flight lost 13-27% of their throughput to it), so
        any Evaluate call counts as another caller's to a caller with batches."""
        self._evaluated = time.monotonic_ns()

    def deciding(self) -> bool:
        """Decisions are being served: an Evaluate call within LINGER_NS, or a batch in
        progress (StreamDecisions keeps its share of the loop only then)."""
        return bool(self._active) or time.monotonic_ns() - self._evaluated <= LINGER_NS

    def _prune(self, now: int) -> None:
        """Forget callers idle past LINGER_NS (amortized: the bound doubles with the live)."""
        idle = self._idle
        for key in [key for key, since in idle.items() if now - since > LINGER_NS]:
            del idle[key]
        self._prune_at = max(64, 2 * len(idle))

    def _alone(self, key: str) -> bool:
        """No caller but `key` has a call in progress or had one within LINGER_NS."""
        active = self._active
        if len(active) > 1 or (active and key not in active):
            return False
        now = time.monotonic_ns()
        if now - self._evaluated <= LINGER_NS:
            return False
        idle = self._idle
        return all(now - since > LINGER_NS for other, since in idle.items() if other != key)

    def shared(self) -> bool:
        """More than one caller has a call in progress or had one within LINGER_NS (a batch
        then gives the loop back more often)."""
        if len(self._active) > 1:
            return True
        now = time.monotonic_ns()
        if now - self._evaluated <= LINGER_NS:
            return True
        idle = self._idle
        if not idle:
            return False
        self._prune(now)
        return len(idle.keys() | self._active.keys()) > 1

    async def _park(self, context: grpc.aio.ServicerContext[Any, Any], key: str,
                    weight: int) -> None:
        waiting = self._parked.setdefault(key, deque())
        if len(waiting) >= self.queue:
            self.stats["refused"] += 1
            who = f"connection {key}" if caller().method == BY_NOTHING else f"principal {key!r}"
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{who} has {len(waiting)} calls waiting for its fair share of the server "
                f"already (--fair-share-queue {self.queue}, --fair-share-calls {self.calls})")
        ticket = _Parked(asyncio.get_running_loop().create_future(), weight)
        waiting.append(ticket)
        self.stats["parked"] += 1
        # Registered now so that a parked call that ends (deadline, cancel) leaves the queue.
        context.add_done_callback(partial(self._parked_done, key, ticket))  # type: ignore[arg-type]
        await ticket.future

    def _done(self, key: str, weight: int, _context: Any = None) -> None:
        """A call of `key` ended: its weight goes back, to its own parked calls first."""
        held = self._active[key] - weight
        waiting = self._parked.get(key)
        if waiting:
            alone = None
            while waiting:
                ticket = waiting[0]
                if held + ticket.weight > self.calls:
                    if alone is None:
                        self._active[key] = held  # _alone reads the count without this call
                        alone = self._alone(key)
                    if not alone:
                        break
                waiting.popleft()
                if ticket.future.done():  # cancelled (deadline): it no longer wants a slot
                    continue
                held += ticket.weight
                ticket.admitted = True
                ticket.future.set_result(None)
            if not waiting:
                del self._parked[key]
        if held > 0:
            self._active[key] = held
            return
        del self._active[key]
        now = self._idle[key] = time.monotonic_ns()
        if len(self._idle) > self._prune_at:
            self._prune(now)

    def _parked_done(self, key: str, ticket: _Parked, _context: Any = None) -> None:
        if ticket.admitted:
            self._done(key, ticket.weight)
            return
        waiting = self._parked.get(key)
        if waiting is not None and ticket in waiting:
            waiting.remove(ticket)
            if not waiting:
                del self._parked[key]
