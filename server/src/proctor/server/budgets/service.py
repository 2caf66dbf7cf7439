"""The proctor.v1.Budgets servicer: validate, act on the store, audit, answer.

Budgets come from the serving policy on every call (`holder.current.budgets`),
so a reload changes them at once. Domain errors map to gRPC codes:
InvalidArgument -> INVALID_ARGUMENT, ReservationNotFound -> NOT_FOUND,
ReservationExists -> ALREADY_EXISTS, FailedPrecondition -> FAILED_PRECONDITION,
StoreUnavailable -> UNAVAILABLE (fail closed). The store's reachability drives the health of
proctor.v1.Budgets: NOT_SERVING when a call or probe fails to reach it, SERVING
again when one succeeds (its StoreWatch probes on its own, so the status
recovers without traffic).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from proctor.v1 import budgets_pb2, budgets_pb2_grpc

from .. import auth
from ..audit.log import AuditLog, offer_of
from ..health import StoreWatch
from ..routes import MethodTable
from ..seams import ServingPolicy
from .answer import add_statuses, reserve_answer
from .plans import (
    check_id,
    check_reservation,
)
from .store import (
    BudgetError,
    BudgetStore,
    FailedPrecondition,
    InvalidArgument,
    ReservationExists,
    ReservationNotFound,
    StoreUnavailable,
)

SERVICE_NAME = "proctor.v1.Budgets"
log = logging.getLogger("proctor.budgets")

_CODES: tuple[tuple[type[BudgetError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ReservationNotFound, grpc.StatusCode.NOT_FOUND),
    (ReservationExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)
RESERVE_METHOD = "/proctor.v1.Budgets/ReserveBudget"


class BudgetsService(budgets_pb2_grpc.BudgetsServicer):
    """Budgets over gRPC, on any BudgetStore."""

    def __init__(self, store: BudgetStore, holder: ServingPolicy, audit: AuditLog,
                 health: Any = None) -> None:
        self._store = store
        self._holder = holder
        self._audit = audit
        self._health = health
        self.watch = StoreWatch(SERVICE_NAME, store.ping, StoreUnavailable, health)
        # offer() enqueues without a coroutine when that is all record() would do
        self._offer = offer_of(audit)

    async def close(self) -> None:
        """Stop the health watch and close the store."""
        await self.watch.stop()
        await self._store.close()

    # -- plumbing ------------------------------------------------------------------------

    def _budgets(self) -> tuple[Any, ...]:
        policy = self._holder.current
        return tuple(getattr(policy, "budgets", ()) or ())

    async def _fail(
        self, context: Any, op: str, fields: dict[str, Any], e: BudgetError
    ) -> NoReturn:
        code = next(c for t, c in _CODES if isinstance(e, t))
        if isinstance(e, StoreUnavailable):
            self.watch.mark(False)
        fields = {**fields, "op": op, "caller": auth.audit_caller(), "outcome": "error",
                  "code": code.name, "error": e.message}
        with contextlib.suppress(Exception):
            await self._audit.record("budget", fields)
        await context.abort(code, e.message)
        raise AssertionError("unreachable")  # context.abort raises

    # -- the RPCs ------------------------------------------------------------------------

    async def ReserveBudget(self, data: bytes, context: Any) -> bytes:
        """Served on raw bytes (see `add_to`): upb decodes the request and
        server/budgets/answer.py encodes the answer."""
        try:
            request = budgets_pb2.ReserveBudgetRequest.FromString(data)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"request: not a ReserveBudgetRequest ({e})")
        rid, tenant, agent_id, run_id = (
            request.reservation_id, request.tenant, request.agent_id, request.run_id
        )
        unit, amount, ttl = request.unit, request.amount, request.ttl_seconds
        try:  # the caller's tenants, acting as one of its agents
            tenant = auth.authorize(auth.caller(), tenant, agent=agent_id)
        except auth.Denied as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
        policy = self._holder.current
        budgets = tuple(getattr(policy, "budgets", ()) or ())
        if request.allow_unbudgeted and not any(b.unit == unit for b in budgets):
            return await self._unbudgeted(request, context)
        try:
            r = await self._store.reserve(
                budgets, rid, tenant, agent_id, run_id, unit, amount, ttl,
            )
        except BudgetError as e:
            await self._fail(context, "reserve", {
                "reservation_id": rid, "tenant": tenant, "agent_id": agent_id,
                "run_id": run_id, "unit": unit, "amount": amount, "ttl_seconds": ttl,
            }, e)
        self.watch.mark(True)
        # One dict, handed over as is (the pipeline owns it from here).
        event = {
            "reservation_id": rid, "tenant": tenant, "agent_id": agent_id, "run_id": run_id,
            "unit": unit, "amount": amount, "ttl_seconds": ttl, "op": "reserve",
            "caller": auth.audit_caller(),
            "outcome": "granted" if r.granted else "refused", "granted": r.granted,
            "refused_by": r.refused_by,
            "policy_version": getattr(policy, "policy_version", ""),
        }
        if not self._offer("budget", event):
            await self._audit.record("budget", event)
        return reserve_answer(r)

    async def _unbudgeted(self, request: Any, context: Any) -> bytes:
        """allow_unbudgeted and no budget of the unit: granted, nothing held. The fields are
        checked as for any reservation (bad input is INVALID_ARGUMENT all the same)."""
        try:
            check_reservation(request.reservation_id, request.amount, request.ttl_seconds)
            check_id("unit", request.unit, required=True)
            for name in ("tenant", "agent_id", "run_id"):
                check_id(name, getattr(request, name), required=False)
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        return budgets_pb2.ReserveBudgetResponse(
            granted=True, reservation_id=request.reservation_id).SerializeToString()

    def add_to(self, table: MethodTable) -> None:
        """Register every Budgets method in `table`; ReserveBudget without upb
        (de)serializers: the servicer takes and gives bytes."""
        budgets_pb2_grpc.add_BudgetsServicer_to_server(self, table)
        table.replace(RESERVE_METHOD, grpc.unary_unary_rpc_method_handler(self.ReserveBudget))

    async def CommitBudget(
        self, request: budgets_pb2.CommitBudgetRequest, context: Any
    ) -> budgets_pb2.CommitBudgetResponse:
        fields = {"reservation_id": request.reservation_id, "actual": request.actual}
        try:  # only the caller's tenants' reservations (another's is NOT_FOUND)
            r = await self._store.commit(request.reservation_id, request.actual,
                                         _own_tenants())
        except BudgetError as e:
            await self._fail(context, "commit", fields, e)
        self.watch.mark(True)
        await self._audit.record("budget", {
            **fields, "op": "commit", "caller": auth.audit_caller(),
            "outcome": "over" if r.over else "committed", "over": r.over,
        })
        resp = budgets_pb2.CommitBudgetResponse(reservation_id=r.reservation_id, over=r.over)
        add_statuses(resp.budgets, r.budgets)
        return resp

    async def ReleaseBudget(
        self, request: budgets_pb2.ReleaseBudgetRequest, context: Any
    ) -> budgets_pb2.ReleaseBudgetResponse:
        fields = {"reservation_id": request.reservation_id}
        try:
            r = await self._store.release(request.reservation_id, _own_tenants())
        except BudgetError as e:
            await self._fail(context, "release", fields, e)
        self.watch.mark(True)
        await self._audit.record("budget", {**fields, "op": "release", "outcome": "released",
                                            "caller": auth.audit_caller()})
        resp = budgets_pb2.ReleaseBudgetResponse(reservation_id=r.reservation_id)
        add_statuses(resp.budgets, r.budgets)
        return resp

    async def GetBudget(
        self, request: budgets_pb2.GetBudgetRequest, context: Any
    ) -> budgets_pb2.GetBudgetResponse:
        try:
            tenant = auth.tenant_for(auth.caller(), request.tenant)
        except auth.Denied as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
        fields = {
            "budget_id": request.budget_id,
            "tenant": tenant,
            "agent_id": request.agent_id,
            "run_id": request.run_id,
        }
        try:
            statuses = await self._store.get(
                self._budgets(), tenant, request.agent_id, request.run_id,
                request.budget_id,
            )
        except BudgetError as e:
            await self._fail(context, "get", fields, e)
        self.watch.mark(True)
        await self._audit.record("budget", {**fields, "op": "get", "outcome": "ok",
                                            "caller": auth.audit_caller()})
        resp = budgets_pb2.GetBudgetResponse()
        add_statuses(resp.budgets, statuses)
        return resp


def _own_tenants() -> tuple[str, ...] | None:
    """The tenants whose reservations the caller may commit and release (None: any)."""
    p = auth.caller()
    if p.unrestricted or "*" in p.tenants:
        return None
    return p.tenants
