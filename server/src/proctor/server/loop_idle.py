"""Is the event loop otherwise idle? For work that is cheaper done at once than scheduled.

The audit pipeline seals a decision at once only while nothing else is pending on
the loop; otherwise it leaves the work to the loop, as usual. CPython's asyncio
loops keep the callbacks they run next in a private deque, `_ready`; this is the
one place that reads it, for the audit alone (the Redis layer no longer does:
docs/redis.md). The audit's rewrite (issue 21) is to drop it, and this module with it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


def pending_callbacks(loop: asyncio.AbstractEventLoop) -> deque[Any] | None:
    """The loop's queue of callbacks ready to run (empty: the loop is otherwise idle),
    or None for a loop without one (then callers keep to their usual path)."""
    ready = getattr(loop, "_ready", None)
    return ready if isinstance(ready, deque) else None
