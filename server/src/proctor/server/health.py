"""Standard grpc.health.v1 status of the process.

The overall status ("") and proctor.v1.Decisions are SERVING once a policy is
loaded (Evaluate needs no store). proctor.v1.Budgets and proctor.v1.Approvals
follow their store: the store reports reachability through `set_service`.
While draining every service is NOT_SERVING, and stays so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

OVERALL = ""
DECISIONS = "proctor.v1.Decisions"
BUDGETS = "proctor.v1.Budgets"
APPROVALS = "proctor.v1.Approvals"
AUDIT = "proctor.v1.Audit"
ADMIN = "proctor.v1.Admin"

log = logging.getLogger("proctor.health")

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """Owns the health servicer; call its methods on the server's event loop."""

    def __init__(self) -> None:
        self.servicer = HealthServicer()
        self._pending: set[asyncio.Task[None]] = set()
        self._draining = False
        # Called once on drain: long-lived streams end so their clients move on (streams.py).
        self._on_drain: list[Callable[[], None]] = []

    def on_drain(self, callback: Callable[[], None]) -> None:
        self._on_drain.append(callback)

    async def start(self, services: tuple[str, ...]) -> None:
        """Declare every service NOT_SERVING until told otherwise."""
        for name in (OVERALL, *services):
            await self.servicer.set(name, _NOT_SERVING)

    async def policy_loaded(self) -> None:
        """The policy is serving: the overall status and Decisions become SERVING."""
        for name in (OVERALL, DECISIONS, ADMIN, AUDIT):
            await self.servicer.set(name, _SERVING)

    def set_service(self, name: str, serving: bool) -> None:
        """Report one service's state (a store reachable or not); ignored while draining."""
        if self._draining:
            return
        task = asyncio.get_running_loop().create_task(
            self.servicer.set(name, _SERVING if serving else _NOT_SERVING)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Every service NOT_SERVING, for good."""
        self._draining = True
        for callback in self._on_drain:
            callback()
        await self.servicer.enter_graceful_shutdown()

    @property
    def draining(self) -> bool:
        return self._draining


class StoreWatch:
    """A store's reachability, reported to health: probed every second, and marked by calls.

    `probe` raises `unavailable` when the store cannot be reached; any other
    exception is logged and counts as reachable (the store answered). `on_change`
    hears each transition (the approval gate stops waiting on a dead store).
    """

    def __init__(
        self,
        service: str,
        probe: Callable[[], Awaitable[object]],
        unavailable: type[BaseException],
        health: HealthState | None,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.service = service
        self._probe = probe
        self._unavailable = unavailable
        self._health = health
        self._on_change = on_change
        self.serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    def mark(self, serving: bool) -> None:
        """Record the outcome of a store call; reports only transitions."""
        if serving == self.serving:
            return
        self.serving = serving
        if serving:
            log.info("store reachable: %s SERVING", self.service)
        else:
            log.warning("store unreachable: %s NOT_SERVING", self.service)
        if self._on_change is not None:
            self._on_change(serving)
        if self._health is not None:
            self._health.set_service(self.service, serving)

    async def check(self) -> bool:
        """Probe the store once and mark the result."""
        try:
            await self._probe()
        except self._unavailable:
            self.mark(False)
            return False
        except Exception:
            log.exception("%s: store probe failed", self.service)
        self.mark(True)
        return True

    async def _run(self, interval: float) -> None:
        while True:
            serving = await self.check()
            # Re-stated every time, so it holds whatever order services were declared in.
            if self._health is not None:
                self._health.set_service(self.service, serving)
            await asyncio.sleep(interval)

    def start(self, interval: float = 1.0) -> None:
        """Probe in the background on the running loop (no loop: do nothing)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run(interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
