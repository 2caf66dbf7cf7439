"""Budget calls for both clients: reserve, commit, release, budget, and `reservation(...)`.

    with ProctorClient("127.0.0.1:50051") as proctor:
        with proctor.reservation("tokens", 2000, tenant="acme", agent_id="etl-7") as held:
            reply = call_the_model(max_tokens=2000)
            held.actual = reply.usage.total_tokens   # committed at exit (default: the amount)

`reservation` reserves (raising BudgetRefusedError when a budget refuses), runs
the block, then commits at `held.actual` when the block succeeds or releases
when it raises. A concurrency lease is always released at exit (leases have no
commit). A reservation_id is generated when none is given and kept across the
client's retries, so a retry after a lost answer never reserves twice.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from proctor.v1 import budgets_pb2, budgets_pb2_grpc

from ._base import may_fail_closed
from .errors import ProctorError

FAIL_CLOSED_BUDGET = "client.fail_closed"
DEFAULT_TTL_SECONDS = 300
_DEFAULT: Any = object()
_KINDS = {
    budgets_pb2.BUDGET_KIND_SPEND: "spend",
    budgets_pb2.BUDGET_KIND_CONCURRENCY: "concurrency",
}


def _time(ts: Any, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget's counter for one scope key."""

    budget_id: str
    unit: str
    scope: str
    scope_key: str
    kind: str  # spend | concurrency
    limit: int
    used: int
    reserved: int
    remaining: int
    window: str
    window_resets_at: datetime | None
    over: bool

    @classmethod
    def from_proto(cls, s: budgets_pb2.BudgetStatus) -> BudgetStatus:
        return cls(
            budget_id=s.budget_id, unit=s.unit, scope=s.scope, scope_key=s.scope_key,
            kind=_KINDS.get(s.kind, "unspecified"), limit=s.limit, used=s.used,
            reserved=s.reserved, remaining=s.remaining, window=s.window,
            window_resets_at=_time(s.window_resets_at, s.HasField("window_resets_at")),
            over=s.over,
        )


@dataclass(frozen=True, slots=True)
class Reservation:
    """The answer to reserve: granted or the budget that refused, and every budget's status."""

    reservation_id: str
    granted: bool
    refused_by: str
    budgets: tuple[BudgetStatus, ...]
    expires_at: datetime | None

    @property
    def held(self) -> bool:
        """Something is held (to commit or release): granted against at least one budget.
        False when refused, or when `allow_unbudgeted` found no budget of the unit."""
        return self.granted and bool(self.budgets)

    @property
    def lease(self) -> bool:
        """A concurrency lease: released, never committed."""
        return any(b.kind == "concurrency" for b in self.budgets)

    @classmethod
    def from_proto(cls, r: budgets_pb2.ReserveBudgetResponse) -> Reservation:
        return cls(
            reservation_id=r.reservation_id, granted=r.granted, refused_by=r.refused_by,
            budgets=tuple(BudgetStatus.from_proto(s) for s in r.budgets),
            expires_at=_time(r.expires_at, r.HasField("expires_at")),
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """The answer to commit or release."""

    reservation_id: str
    budgets: tuple[BudgetStatus, ...]
    over: bool = False


class BudgetRefusedError(ProctorError):
    """`reservation(...)` was refused: `.reservation.refused_by` names the budget."""

    def __init__(self, reservation: Reservation) -> None:
        super().__init__(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"budget {reservation.refused_by!r} refused reservation "
            f"{reservation.reservation_id!r}",
            "ReserveBudget",
        )
        self.reservation = reservation


class Held:
    """What the `reservation` block sees: the reservation, and `actual` to commit at exit."""

    def __init__(self, reservation: Reservation, amount: int) -> None:
        self.reservation = reservation
        self.actual: int = amount

    @property
    def reservation_id(self) -> str:
        return self.reservation.reservation_id


def _reserve_request(unit: str, amount: int, reservation_id: str | None, tenant: str,
                     agent_id: str, run_id: str, ttl_seconds: int,
                     allow_unbudgeted: bool) -> Any:
    return budgets_pb2.ReserveBudgetRequest(
        reservation_id=reservation_id or uuid.uuid4().hex, unit=unit, amount=amount,
        tenant=tenant, agent_id=agent_id, run_id=run_id, ttl_seconds=ttl_seconds,
        allow_unbudgeted=allow_unbudgeted,
    )


def _refused_closed(request: Any) -> Reservation:
    return Reservation(request.reservation_id, False, FAIL_CLOSED_BUDGET, (), None)


class BudgetsMixin:
    """Budget methods of ProctorClient (uses its channel, options and retry loop)."""

    _channel: Any
    options: Any

    def _call(self, method: Any, name: str, request: Any, timeout: Any) -> Any:
        raise NotImplementedError  # provided by ProctorClient

    @property
    def _budget_stub(self) -> budgets_pb2_grpc.BudgetsStub:
        stub = self.__dict__.get("_budgets_stub_")
        if stub is None:
            stub = self.__dict__["_budgets_stub_"] = budgets_pb2_grpc.BudgetsStub(self._channel)
        return stub

    def _timeout(self, timeout: Any) -> Any:
        return self.options.timeout if timeout is _DEFAULT else timeout

    def reserve(self, unit: str, amount: int, *, reservation_id: str | None = None,
                tenant: str = "", agent_id: str = "", run_id: str = "",
                ttl_seconds: int = DEFAULT_TTL_SECONDS, allow_unbudgeted: bool = False,
                timeout: Any = _DEFAULT) -> Reservation:
        """Reserve `amount` of `unit` against every budget that applies, all or nothing.

        A unit with no budget in the serving policy is InvalidRequestError, unless
        `allow_unbudgeted`: then it is granted with no budgets and nothing held
        (`held` is False: nothing to commit or release).
        With fail_closed, no answer gives a refused Reservation (refused_by
        "client.fail_closed") instead of raising.
        """
        request = _reserve_request(unit, amount, reservation_id, tenant, agent_id, run_id,
                                   ttl_seconds, allow_unbudgeted)
        try:
            r = self._call(self._budget_stub.ReserveBudget, "ReserveBudget", request,
                           self._timeout(timeout))
        except ProctorError as error:
            if may_fail_closed(error, self.options.fail_closed):
                return _refused_closed(request)
            raise
        return Reservation.from_proto(r)

    def commit(self, reservation_id: str, actual: int, *, timeout: Any = _DEFAULT) -> Settlement:
        """Settle a reservation at `actual` (refunding the difference; above it: over)."""
        r = self._call(self._budget_stub.CommitBudget, "CommitBudget",
                       budgets_pb2.CommitBudgetRequest(reservation_id=reservation_id,
                                                       actual=actual),
                       self._timeout(timeout))
        return Settlement(r.reservation_id, tuple(map(BudgetStatus.from_proto, r.budgets)),
                          r.over)

    def release(self, reservation_id: str, *, timeout: Any = _DEFAULT) -> Settlement:
        """Refund a reservation or free a lease."""
        r = self._call(self._budget_stub.ReleaseBudget, "ReleaseBudget",
                       budgets_pb2.ReleaseBudgetRequest(reservation_id=reservation_id),
                       self._timeout(timeout))
        return Settlement(r.reservation_id, tuple(map(BudgetStatus.from_proto, r.budgets)))

    def budget(self, budget_id: str = "", *, tenant: str = "", agent_id: str = "",
               run_id: str = "", timeout: Any = _DEFAULT) -> list[BudgetStatus]:
        """Usage, reserved and remaining of one budget, or of every budget whose scope is given."""
        r = self._call(self._budget_stub.GetBudget, "GetBudget",
                       budgets_pb2.GetBudgetRequest(budget_id=budget_id, tenant=tenant,
                                                    agent_id=agent_id, run_id=run_id),
                       self._timeout(timeout))
        return [BudgetStatus.from_proto(s) for s in r.budgets]

    @contextlib.contextmanager
    def reservation(self, unit: str, amount: int, **kwargs: Any) -> Iterator[Held]:
        """Reserve, run the block, commit at `held.actual` on success or release on error."""
        r = self.reserve(unit, amount, **kwargs)
        if not r.granted:
            raise BudgetRefusedError(r)
        held = Held(r, amount)
        if not r.held:  # allow_unbudgeted and no budget of the unit: nothing to settle
            yield held
            return
        try:
            yield held
        except BaseException:
            with contextlib.suppress(ProctorError):
                self.release(r.reservation_id)
            raise
        if r.lease:
            self.release(r.reservation_id)
        else:
            self.commit(r.reservation_id, held.actual)


class AsyncBudgetsMixin:
    """Budget methods of AsyncProctorClient; the same as BudgetsMixin, awaited."""

    _channel: Any
    options: Any

    async def _call(self, method: Any, name: str, request: Any, timeout: Any) -> Any:
        raise NotImplementedError  # provided by AsyncProctorClient

    @property
    def _budget_stub(self) -> budgets_pb2_grpc.BudgetsStub:
        stub = self.__dict__.get("_budgets_stub_")
        if stub is None:
            stub = self.__dict__["_budgets_stub_"] = budgets_pb2_grpc.BudgetsStub(self._channel)
        return stub

    def _timeout(self, timeout: Any) -> Any:
        return self.options.timeout if timeout is _DEFAULT else timeout

    async def reserve(self, unit: str, amount: int, *, reservation_id: str | None = None,
                      tenant: str = "", agent_id: str = "", run_id: str = "",
                      ttl_seconds: int = DEFAULT_TTL_SECONDS,
                      allow_unbudgeted: bool = False,
                      timeout: Any = _DEFAULT) -> Reservation:
        """See BudgetsMixin.reserve."""
        request = _reserve_request(unit, amount, reservation_id, tenant, agent_id, run_id,
                                   ttl_seconds, allow_unbudgeted)
        try:
            r = await self._call(self._budget_stub.ReserveBudget, "ReserveBudget", request,
                                 self._timeout(timeout))
        except ProctorError as error:
            if may_fail_closed(error, self.options.fail_closed):
                return _refused_closed(request)
            raise
        return Reservation.from_proto(r)

    async def commit(self, reservation_id: str, actual: int, *,
                     timeout: Any = _DEFAULT) -> Settlement:
        """See BudgetsMixin.commit."""
        r = await self._call(self._budget_stub.CommitBudget, "CommitBudget",
                             budgets_pb2.CommitBudgetRequest(reservation_id=reservation_id,
                                                             actual=actual),
                             self._timeout(timeout))
        return Settlement(r.reservation_id, tuple(map(BudgetStatus.from_proto, r.budgets)),
                          r.over)

    async def release(self, reservation_id: str, *, timeout: Any = _DEFAULT) -> Settlement:
        """See BudgetsMixin.release."""
        r = await self._call(self._budget_stub.ReleaseBudget, "ReleaseBudget",
                             budgets_pb2.ReleaseBudgetRequest(reservation_id=reservation_id),
                             self._timeout(timeout))
        return Settlement(r.reservation_id, tuple(map(BudgetStatus.from_proto, r.budgets)))

    async def budget(self, budget_id: str = "", *, tenant: str = "", agent_id: str = "",
                     run_id: str = "", timeout: Any = _DEFAULT) -> list[BudgetStatus]:
        """See BudgetsMixin.budget."""
        r = await self._call(self._budget_stub.GetBudget, "GetBudget",
                             budgets_pb2.GetBudgetRequest(budget_id=budget_id, tenant=tenant,
                                                          agent_id=agent_id, run_id=run_id),
                             self._timeout(timeout))
        return [BudgetStatus.from_proto(s) for s in r.budgets]

    @contextlib.asynccontextmanager
    async def reservation(self, unit: str, amount: int, **kwargs: Any) -> AsyncIterator[Held]:
        """See BudgetsMixin.reservation."""
        r = await self.reserve(unit, amount, **kwargs)
        if not r.granted:
            raise BudgetRefusedError(r)
        held = Held(r, amount)
        if not r.held:  # allow_unbudgeted and no budget of the unit: nothing to settle
            yield held
            return
        try:
            yield held
        except BaseException:
            with contextlib.suppress(ProctorError):
                await self.release(r.reservation_id)
            raise
        if r.lease:
            await self.release(r.reservation_id)
        else:
            await self.commit(r.reservation_id, held.actual)
