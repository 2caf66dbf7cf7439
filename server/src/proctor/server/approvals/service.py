"""The proctor.v1.Approvals servicer: get, wait on, list and resolve approvals.

Domain errors map to gRPC codes: InvalidArgument -> INVALID_ARGUMENT,
ApprovalNotFound -> NOT_FOUND, FailedPrecondition -> FAILED_PRECONDITION,
StoreUnavailable -> UNAVAILABLE. Resolutions and expiries are audit events of
kind "approval" (events.py); creation and consumption are recorded by the
gate (gate.py) on the Evaluate path.

A background watch probes the store every second: it drives the health of
proctor.v1.Approvals and the gate's fast path, and applies due expiries (so an
expiry is audited within about a second even when nobody looks at the
approval; with several servers on one Redis, each expiry is reported by
exactly one of them).

WaitApproval waits `timeout_seconds`, or, when that is 0, until shortly before
the call's deadline (the caller then gets the still-pending approval rather
than DEADLINE_EXCEEDED); with neither, until the approval is resolved or
expires. A wait that ends answers the approval as last seen, without another
store call, so many waits ending together cost little; a caller whose deadline
passes first gets a clean DEADLINE_EXCEEDED, and its waiter is gone with the
call. Open waits are limited per client connection (`max_waiters_per_connection`,
--max-approval-waiters-per-connection), per principal (`max_waiters_per_principal`,
--max-approval-waiters-per-principal) and in total (`max_waiters`,
--max-approval-waiters): past any, RESOURCE_EXHAUSTED naming the limit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from proctor.v1 import approvals_pb2, approvals_pb2_grpc

from .. import auth
from ..audit.log import AuditLog
from ..health import StoreWatch
from . import metrics
from .events import approval_event
from .gate import ApprovalGate
from .store import (
    APPROVED,
    CONSUMED,
    DENIED,
    EXPIRED,
    PENDING,
    Approval,
    ApprovalError,
    ApprovalNotFound,
    ApprovalStore,
    FailedPrecondition,
    InvalidArgument,
    StoreUnavailable,
)

SERVICE_NAME = "proctor.v1.Approvals"
MAX_WAIT_SECONDS = 86400
DEADLINE_MARGIN_SECONDS = 0.1
DEFAULT_MAX_WAITERS = 10_000
DEFAULT_MAX_WAITERS_PER_CONNECTION = 2000
DEFAULT_MAX_WAITERS_PER_PRINCIPAL = 1000
log = logging.getLogger("proctor.approvals")
T = TypeVar("T")

STATUS_TO_PROTO = {
    PENDING: approvals_pb2.APPROVAL_STATUS_PENDING,
    APPROVED: approvals_pb2.APPROVAL_STATUS_APPROVED,
    DENIED: approvals_pb2.APPROVAL_STATUS_DENIED,
    EXPIRED: approvals_pb2.APPROVAL_STATUS_EXPIRED,
    CONSUMED: approvals_pb2.APPROVAL_STATUS_CONSUMED,
}
PROTO_TO_STATUS = {v: k for k, v in STATUS_TO_PROTO.items()}

_CODES: tuple[tuple[type[ApprovalError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ApprovalNotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(round(seconds * 1000))
    return ts


def to_proto(a: Approval) -> approvals_pb2.Approval:
    d = a.draft
    out = approvals_pb2.Approval(
        approval_id=a.approval_id,
        status=STATUS_TO_PROTO.get(a.status, approvals_pb2.APPROVAL_STATUS_UNSPECIFIED),
        request_id=d.request_id,
        run_id=d.run_id,
        tenant=d.tenant,
        delegation_path=list(d.delegation_path),
        topic=d.topic,
        risk_tags=list(d.risk_tags),
        derived_tags=list(d.derived_tags),
        labels=dict(d.labels),
        rule_id=d.rule_id,
        reason=d.reason,
        approvers=list(d.approvers),
        policy_version=d.policy_version,
        decision_id=d.decision_id,
        action_hash=d.action_hash,
        reviewer=a.reviewer,
        resolution_reason=a.resolution_reason,
    )
    out.created_at.CopyFrom(_ts(a.created_at))
    out.expires_at.CopyFrom(_ts(a.expires_at))
    if a.resolved_at:
        out.resolved_at.CopyFrom(_ts(a.resolved_at))
    return out


class ApprovalsService(approvals_pb2_grpc.ApprovalsServicer):
    """Approvals over gRPC, on any ApprovalStore; owns the store's health watch."""

    def __init__(self, store: ApprovalStore, audit: AuditLog, health: Any = None,
                 gate: ApprovalGate | None = None, *, max_waiters: int = DEFAULT_MAX_WAITERS,
                 max_waiters_per_connection: int = DEFAULT_MAX_WAITERS_PER_CONNECTION,
                 max_waiters_per_principal: int = DEFAULT_MAX_WAITERS_PER_PRINCIPAL) -> None:
        self._store = store
        self._audit = audit
        self._health = health
        self.max_waiters = max_waiters
        self.max_waiters_per_connection = max_waiters_per_connection
        self._waiting: Counter[str] = Counter()  # open WaitApproval calls per peer
        self.max_waiters_per_principal = max_waiters_per_principal
        self._waiting_of: Counter[str] = Counter()  # open WaitApproval calls per principal
        self.waiting = 0  # in total
        self.gate = gate or ApprovalGate(store, audit)
        self.feed = self.gate.feed  # created (gate), approved, denied, expired (here)
        self.watch = StoreWatch(SERVICE_NAME, self._probe, StoreUnavailable, health,
                                on_change=self._gate_availability)
        store.on_expired = self._record_expired

    # -- audit of expiries, health -------------------------------------------------------

    async def _record_expired(self, items: tuple[Approval, ...]) -> None:
        for a in items:
            await self._audit.record("approval", approval_event("expired", a))
            self.feed.publish("expired", a)

    def _gate_availability(self, serving: bool) -> None:
        self.gate.available = serving

    async def _probe(self) -> None:
        """Ping the store and apply due expiries (the sweep rides on the health probe)."""
        await self._store.ping()
        await self._store.expire_due()

    async def close(self) -> None:
        await self.watch.stop()
        await self._store.close()

    # -- what both the gRPC methods and the inbox (server/inbox) call -----------------------

    async def get(self, approval_id: str) -> Approval:
        """The approval now; ApprovalError (not found, unavailable) otherwise."""
        a = await self._checked(self._store.get(approval_id))
        return a

    async def list(self, status: str = "", approver: str = "", tenant: str = "",
                   limit: int = 0) -> list[Approval]:
        """Newest first (ApprovalStore.list); ApprovalError on bad input or no store."""
        items: list[Approval] = await self._checked(
            self._store.list(status, approver, tenant, limit))
        return items

    async def resolve(self, approval_id: str, approve: bool, reviewer: str,
                      reason: str, principal: auth.Principal | None = None) -> Approval:
        """Approve or deny; audited and published on the feed. ApprovalError otherwise.

        With `principal` (the caller), it is the reviewer recorded, and it must be allowed
        to resolve this approval (auth.check_reviewer): auth.Denied otherwise.
        """
        if principal is not None and not principal.unrestricted:
            auth.check_reviewer(principal, await self.get(approval_id))
            reviewer = principal.id
        a = await self._checked(self._store.resolve(approval_id, approve, reviewer, reason))
        op = "approved" if approve else "denied"
        await self._audit.record("approval", approval_event(op, a))
        self.feed.publish(op, a)
        return a

    async def _checked(self, call: Awaitable[T]) -> T:
        """Await a store call, keeping the health watch in step with what it saw."""
        try:
            out = await call
        except StoreUnavailable:
            self.watch.mark(False)
            raise
        self.watch.mark(True)
        return out

    async def _fail(self, context: Any, e: ApprovalError) -> NoReturn:
        code = next(c for t, c in _CODES if isinstance(e, t))
        if isinstance(e, StoreUnavailable):
            self.watch.mark(False)
        await context.abort(code, e.message)
        raise AssertionError("unreachable")  # context.abort raises

    async def _visible(self, context: Any, approval_id: str) -> Approval | None:
        """The approval when the caller is restricted (after checking its tenant is the
        caller's: PERMISSION_DENIED otherwise); None for the unrestricted caller."""
        principal = auth.caller()
        if principal.unrestricted:
            return None
        try:
            a = await self.get(approval_id)
        except ApprovalError as e:
            await self._fail(context, e)
        if not principal.has_tenant(a.draft.tenant):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, (
                f"principal {principal.id!r} may not see approval {approval_id!r} of tenant "
                f"{a.draft.tenant!r} (its tenants: {', '.join(principal.tenants)})"))
        return a

    # -- the RPCs ------------------------------------------------------------------------

    async def GetApproval(
        self, request: approvals_pb2.GetApprovalRequest, context: Any
    ) -> approvals_pb2.Approval:
        a = await self._visible(context, request.approval_id)
        if a is None:
            try:
                a = await self.get(request.approval_id)
            except ApprovalError as e:
                await self._fail(context, e)
        return to_proto(a)

    async def WaitApproval(
        self, request: approvals_pb2.WaitApprovalRequest, context: Any
    ) -> approvals_pb2.Approval:
        if request.timeout_seconds < 0:
            await self._fail(context, InvalidArgument(
                "timeout_seconds", f"must not be negative, got {request.timeout_seconds}"))
        await self._visible(context, request.approval_id)
        peer = context.peer() or ""
        if self.waiting >= self.max_waiters:
            metrics.WAITERS_REFUSED.labels("total").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{self.max_waiters} WaitApproval calls are open on this server already "
                "(--max-approval-waiters): try again later, or poll GetApproval"))
        if self._waiting[peer] >= self.max_waiters_per_connection:
            metrics.WAITERS_REFUSED.labels("connection").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"{self.max_waiters_per_connection} WaitApproval calls are open on this "
                "connection already (--max-approval-waiters-per-connection): try again "
                "later, or poll GetApproval"))
        who = auth.caller().id
        if self._waiting_of[who] >= self.max_waiters_per_principal:
            metrics.WAITERS_REFUSED.labels("principal").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"principal {who!r} has {self.max_waiters_per_principal} WaitApproval calls "
                "open already (--max-approval-waiters-per-principal): try again later, or "
                "poll GetApproval"))
        wait = float(min(request.timeout_seconds, MAX_WAIT_SECONDS) or MAX_WAIT_SECONDS)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = min(wait, max(0.0, remaining - DEADLINE_MARGIN_SECONDS))
        self._waiting[peer] += 1
        self._waiting_of[who] += 1
        self.waiting += 1
        metrics.WAITERS.inc()
        try:
            a = await self._store.wait(request.approval_id, wait)
        except ApprovalError as e:
            await self._fail(context, e)
        finally:
            metrics.WAITERS.dec()
            self.waiting -= 1
            self._waiting[peer] -= 1
            if self._waiting[peer] <= 0:
                del self._waiting[peer]
            self._waiting_of[who] -= 1
            if self._waiting_of[who] <= 0:
                del self._waiting_of[who]
        self.watch.mark(True)
        return to_proto(a)

    async def ListApprovals(
        self, request: approvals_pb2.ListApprovalsRequest, context: Any
    ) -> approvals_pb2.ListApprovalsResponse:
        status = ""
        if request.status != approvals_pb2.APPROVAL_STATUS_UNSPECIFIED:
            status = PROTO_TO_STATUS.get(request.status, "")
            if not status:
                await self._fail(context, InvalidArgument(
                    "status", f"unknown approval status {request.status}"))
        principal = auth.caller()
        tenants: frozenset[str] | None = None
        tenant = request.tenant
        if not principal.unrestricted:  # a reviewer lists its tenants' approvals only
            try:
                tenant = auth.tenant_for(principal, tenant) if tenant or \
                    principal.sole_tenant else ""
            except auth.Denied as e:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
            tenants = None if "*" in principal.tenants else frozenset(principal.tenants)
        try:
            items = await self.list(status, request.approver, tenant, request.limit)
        except ApprovalError as e:
            await self._fail(context, e)
        return approvals_pb2.ListApprovalsResponse(approvals=[
            to_proto(a) for a in items if tenants is None or a.draft.tenant in tenants])

    async def ResolveApproval(
        self, request: approvals_pb2.ResolveApprovalRequest, context: Any
    ) -> approvals_pb2.Approval:
        # The reviewer recorded is the caller; the request's `reviewer` field counts only in
        # the development mode (no identities there), and elsewhere must be the caller.
        principal = auth.caller()
        if not principal.unrestricted and request.reviewer and request.reviewer != principal.id:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, (
                f"reviewer {request.reviewer!r} is not the caller {principal.id!r}: the "
                "reviewer recorded is the authenticated principal (leave the field empty)"))
        try:
            a = await self.resolve(request.approval_id, request.approve, request.reviewer,
                                   request.reason, principal)
        except ApprovalError as e:
            await self._fail(context, e)
        except auth.Denied as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
        return to_proto(a)
