"""The delegation path of the running code, carried in a context variable.

    from proctor.client import ProctorClient, delegation

    with delegation("planner"):                 # A
        with delegation("researcher"):          # A delegates to B
            proctor.evaluate("job.7.read.pii")  # decided with ["planner", "researcher"]

`evaluate()`, `evaluate_batch()` and the framework integrations use the current
path whenever the caller gives none, so a sub-agent started inside a
`delegation()` block evaluates with the whole chain and the policy's `chain:`
and `depth:` conditions reach it without anyone threading the path by hand.

It is a `contextvars.ContextVar`, so it follows the code that runs, not the
thread or the event loop: each asyncio task starts with a copy of its creator's
path (`asyncio.create_task`, `gather`, `asyncio.to_thread`), and a push inside a
task never leaks into its siblings. A plain `threading.Thread` and a plain
`concurrent.futures.ThreadPoolExecutor` (and `loop.run_in_executor`) start with
an empty path: Python does not copy context into new threads. Carry it with
`ContextThreadPoolExecutor` (a drop-in ThreadPoolExecutor whose `submit` and `map`
run each call in a copy of the submitter's context) or `carry_context(fn)` (any
callable, for `threading.Thread(target=carry_context(fn))`). LangGraph and
LangChain already run nodes and tools in copied contexts.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

# The engine's limits on delegation_path (DESIGN section 2): checked at the push, so a bad id
# fails where it is written rather than at some later evaluate.
MAX_PATH = 32
MAX_AGENT_CHARS = 128

P = ParamSpec("P")
T = TypeVar("T")

_PATH: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "proctor_delegation_path", default=()
)


def delegation_path() -> tuple[str, ...]:
    """The current delegation path, root first, acting agent last (empty outside any block)."""
    return _PATH.get()


def check_agent_id(agent_id: object) -> str:
    """`agent_id` when it is a valid agent id; ValueError naming what is wrong otherwise."""
    if not isinstance(agent_id, str) or not 0 < len(agent_id) <= MAX_AGENT_CHARS:
        shown = repr(agent_id) if not isinstance(agent_id, str) else f"{len(agent_id)} chars"
        raise ValueError(f"delegation: an agent id is 1..{MAX_AGENT_CHARS} characters "
                         f"(got {shown})")
    return agent_id


def extend(path: Iterable[str], agent_id: str | None) -> tuple[str, ...]:
    """`path` with `agent_id` acting: appended, unless it is already the last agent (a node
    configured as "B" running inside `delegation("B")` acts once, not twice)."""
    out = tuple(path)
    if agent_id and (not out or out[-1] != agent_id):
        out = (*out, agent_id)
    return out


class delegation:  # noqa: N801 - used like contextlib's lower-case context managers
    """Push `agent_id` onto the current delegation path for the block (or the function).

    As a context manager: `with delegation("B"): ...`. As a decorator:
    `@delegation("B")` on a function or a coroutine function runs each call under it.
    The path is restored on exit, even when the block raises. At most 32 agents,
    each 1..128 characters (the engine's limits); ValueError otherwise.
    """

    __slots__ = ("agent_id", "_tokens")

    def __init__(self, agent_id: str) -> None:
        self.agent_id = check_agent_id(agent_id)
        # One token per active entry: the same object may be entered again (re-entrant use,
        # or a decorator whose function recurses).
        self._tokens: list[contextvars.Token[tuple[str, ...]]] = []

    def __enter__(self) -> tuple[str, ...]:
        path = (*_PATH.get(), self.agent_id)
        if len(path) > MAX_PATH:
            raise ValueError(f"delegation: at most {MAX_PATH} agents on a path "
                             f"(entering {self.agent_id!r} would make {len(path)})")
        self._tokens.append(_PATH.set(path))
        return path

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _PATH.reset(self._tokens.pop())

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        agent_id = self.agent_id
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with delegation(agent_id):
                    return await fn(*args, **kwargs)
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            with delegation(agent_id):
                return fn(*args, **kwargs)
        return run


def carry_context(fn: Callable[P, T]) -> Callable[P, T]:
    """`fn` bound to a copy of the caller's context (delegation path included), for code
    that runs it in a thread: `threading.Thread(target=carry_context(work)).start()`."""
    ctx = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        # A copy per call: one bound function may run in several threads at once, and a
        # Context cannot be entered twice concurrently.
        return ctx.copy().run(fn, *args, **kwargs)
    return run


class ContextThreadPoolExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose `submit` (and so `map`) runs each call in a copy of the
    submitting code's context, so the delegation path reaches the worker threads."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        ctx = contextvars.copy_context()
        return super().submit(ctx.run, fn, *args, **kwargs)


__all__ = [
    "ContextThreadPoolExecutor",
    "carry_context",
    "delegation",
    "delegation_path",
]
