"""Waiting on a condition with a deadline, instead of sleeping a fixed time.

A test that waits for something (a server to serve, an event to be written, a
health status to flip) polls a check until it holds; the deadline is only there
to fail a test that would otherwise hang, so it is generous and never the thing
asserted.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")

INTERVAL = 0.02


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `check` until it returns something truthy, and return that.

    An exception of a type in `ignore` counts as "not yet"; any other propagates at once
    (so a check can assert that a process it waits on is still alive). At the deadline:
    AssertionError naming `what`, chained to the last ignored exception.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except ignore as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from last
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], T | Awaitable[T]],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = INTERVAL,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_until` for a running event loop: `check` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = check()
            result = await value if inspect.isawaitable(value) else value
            if result:
                return cast(T, result)
        except ignore as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from last
        await asyncio.sleep(interval)
