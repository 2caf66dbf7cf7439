"""Standard grpc.health.v1 status of the process.

The overall status ("") and proctor.v1.Decisions are SERVING once a policy is
loaded (Evaluate needs no store). proctor.v1.Budgets and proctor.v1.Approvals
follow their store: the store reports reachability through `set_service`.
While draining every service is NOT_SERVING, and stays so.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

OVERALL = ""
DECISIONS = "proctor.v1.Decisions"
BUDGETS = "proctor.v1.Budgets"
APPROVALS = "proctor.v1.Approvals"
AUDIT = "proctor.v1.Audit"
ADMIN = "proctor.v1.Admin"

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthState:
    """Owns the health servicer; call its methods on the server's event loop."""

    def __init__(self) -> None:
        self.servicer = HealthServicer()
        self._pending: set[asyncio.Task[None]] = set()
        self._draining = False

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
        await self.servicer.enter_graceful_shutdown()

    @property
    def draining(self) -> bool:
        return self._draining
