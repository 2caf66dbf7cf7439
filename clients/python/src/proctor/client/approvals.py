"""Approval calls for both clients: get_approval, wait_for_approval, and evaluate's wait.

    with ProctorClient("127.0.0.1:50051") as proctor:
        d = proctor.evaluate("job.7.send.email", delegation_path=["planner", "mailer"],
                             risk_tags=["external"], wait_for_approval=600)
        if d.allowed:
            send()

`evaluate(..., wait_for_approval=SECONDS)`: when the answer is require_approval
with an approval id, the client waits (WaitApproval) up to SECONDS for a
reviewer, then:

- approved: evaluates the same request again with the approval id, and
  returns that answer (allow, consuming the grant, when the action is the
  very one approved);
- denied or expired (or already used elsewhere): returns a deny that keeps the
  rule id, decision id and approval id of the original answer, with a reason
  that says what happened and who decided;
- still pending when the time is up: returns the original require_approval
  answer, its reason saying how long it waited.

A require_approval without an id (the approval store was unreachable) is
returned at once: there is nothing to wait on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from proctor.v1 import approvals_pb2, approvals_pb2_grpc

from .errors import ProctorError
from .results import DENY, REQUIRE_APPROVAL, DecisionResult, EvaluationRequest

_DEFAULT: Any = object()
DEFAULT_WAIT_SECONDS = 60.0
# Each WaitApproval call waits at most this long; the client loops until its own time is up.
_WAIT_SLICE_SECONDS = 30
_RPC_MARGIN_SECONDS = 2.0

_STATUS = {
    approvals_pb2.APPROVAL_STATUS_PENDING: "pending",
    approvals_pb2.APPROVAL_STATUS_APPROVED: "approved",
    approvals_pb2.APPROVAL_STATUS_DENIED: "denied",
    approvals_pb2.APPROVAL_STATUS_EXPIRED: "expired",
    approvals_pb2.APPROVAL_STATUS_CONSUMED: "consumed",
}


def _time(ts: Any, present: bool) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


@dataclass(frozen=True, slots=True)
class ApprovalState:
    """An approval as the server holds it (status: pending | approved | denied | expired |
    consumed)."""

    approval_id: str
    status: str
    tenant: str
    run_id: str
    request_id: str
    delegation_path: tuple[str, ...]
    topic: str
    rule_id: str
    reason: str
    approvers: tuple[str, ...]
    policy_version: str
    decision_id: str
    reviewer: str
    resolution_reason: str
    created_at: datetime | None
    expires_at: datetime | None
    resolved_at: datetime | None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @classmethod
    def from_proto(cls, a: approvals_pb2.Approval) -> ApprovalState:
        return cls(
            approval_id=a.approval_id, status=_STATUS.get(a.status, "unspecified"),
            tenant=a.tenant, run_id=a.run_id, request_id=a.request_id,
            delegation_path=tuple(a.delegation_path), topic=a.topic, rule_id=a.rule_id,
            reason=a.reason, approvers=tuple(a.approvers), policy_version=a.policy_version,
            decision_id=a.decision_id, reviewer=a.reviewer,
            resolution_reason=a.resolution_reason,
            created_at=_time(a.created_at, a.HasField("created_at")),
            expires_at=_time(a.expires_at, a.HasField("expires_at")),
            resolved_at=_time(a.resolved_at, a.HasField("resolved_at")),
        )


def _wait_request(approval_id: str, left: float) -> tuple[approvals_pb2.WaitApprovalRequest,
                                                          float]:
    slice_s = max(1, min(_WAIT_SLICE_SECONDS, int(left + 0.999)))
    return (approvals_pb2.WaitApprovalRequest(approval_id=approval_id, timeout_seconds=slice_s),
            slice_s + _RPC_MARGIN_SECONDS)


def _resolve_request(approval_id: str, approve: bool, reviewer: str,
                     reason: str) -> approvals_pb2.ResolveApprovalRequest:
    return approvals_pb2.ResolveApprovalRequest(approval_id=approval_id, approve=approve,
                                                reviewer=reviewer, reason=reason)


def settled(first: DecisionResult, state: ApprovalState, waited: float) -> DecisionResult | None:
    """The answer once the wait is over, or None when the approval is approved (re-evaluate)."""
    if state.approved:
        return None
    if state.pending:
        return replace(first, reason=f"{first.reason} (approval {state.approval_id} still "
                                     f"pending after {waited:.0f}s)")
    if state.status == "denied":
        why = f" by {state.reviewer}" if state.reviewer else ""
        why += f": {state.resolution_reason}" if state.resolution_reason else ""
        text = f"approval {state.approval_id} denied{why}"
    elif state.status == "expired":
        text = f"approval {state.approval_id} expired without being used"
    else:
        text = f"approval {state.approval_id} is {state.status}"
    return replace(first, decision=DENY, reason=f"{first.reason} ({text})")


def waits(result: DecisionResult, wait: float | None) -> bool:
    """Does evaluate's wait_for_approval apply to this answer?"""
    return bool(wait) and result.decision == REQUIRE_APPROVAL and bool(result.approval_id)


def with_approval(request: Any, approval_id: str) -> EvaluationRequest:
    """The same EvaluateRequest, presenting `approval_id`."""
    return EvaluationRequest(
        topic=request.topic, delegation_path=tuple(request.delegation_path),
        risk_tags=tuple(request.risk_tags), tenant=request.tenant, run_id=request.run_id,
        request_id=request.request_id, labels=dict(request.labels), approval_id=approval_id,
        explain=request.explain,
    )


class ApprovalsMixin:
    """Approval methods of ProctorClient (uses its channel, options and retry loop)."""

    _channel: Any
    options: Any

    def _call(self, method: Any, name: str, request: Any, timeout: Any) -> Any:
        raise NotImplementedError  # provided by ProctorClient

    def evaluate(self, *args: Any, **kwargs: Any) -> DecisionResult:
        raise NotImplementedError  # provided by ProctorClient

    @property
    def _approval_stub(self) -> approvals_pb2_grpc.ApprovalsStub:
        stub = self.__dict__.get("_approvals_stub_")
        if stub is None:
            stub = self.__dict__["_approvals_stub_"] = approvals_pb2_grpc.ApprovalsStub(
                self._channel)
        return stub

    def get_approval(self, approval_id: str, *, timeout: Any = _DEFAULT) -> ApprovalState:
        """The approval now (ProctorError NOT_FOUND for an unknown id)."""
        t = self.options.timeout if timeout is _DEFAULT else timeout
        a = self._call(self._approval_stub.GetApproval, "GetApproval",
                       approvals_pb2.GetApprovalRequest(approval_id=approval_id), t)
        return ApprovalState.from_proto(a)

    def resolve_approval(self, approval_id: str, approve: bool, *, reviewer: str = "",
                         reason: str = "", timeout: Any = _DEFAULT) -> ApprovalState:
        """Approve or deny a pending approval, as a reviewer (this client's credentials must
        be a reviewer's; `reviewer` names who decided where the server records it as given).
        Already resolved: ProctorError FAILED_PRECONDITION."""
        t = self.options.timeout if timeout is _DEFAULT else timeout
        a = self._call(self._approval_stub.ResolveApproval, "ResolveApproval",
                       _resolve_request(approval_id, approve, reviewer, reason), t)
        return ApprovalState.from_proto(a)

    def wait_for_approval(self, approval_id: str, *,
                          timeout: float = DEFAULT_WAIT_SECONDS) -> ApprovalState:
        """Block until the approval is resolved or expires, or `timeout` seconds pass;
        return its state then (still pending when the time ran out)."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return self.get_approval(approval_id)
            request, deadline = _wait_request(approval_id, min(left, timeout))
            a = ApprovalState.from_proto(self._call(
                self._approval_stub.WaitApproval, "WaitApproval", request, deadline))
            if not a.pending or end - time.monotonic() <= 0:
                return a

    def _await_decision(self, first: DecisionResult, request: Any, wait: float) -> DecisionResult:
        """evaluate's wait_for_approval: wait, then settle (see the module docstring)."""
        started = time.monotonic()
        try:
            state = self.wait_for_approval(first.approval_id, timeout=wait)
        except ProctorError as error:
            if self.options.fail_closed and error.code.name != "INVALID_ARGUMENT":
                return DecisionResult.fail_closed_deny(f"waiting for approval: {error}")
            raise
        out = settled(first, state, time.monotonic() - started)
        if out is not None:
            return out
        return self.evaluate(with_approval(request, first.approval_id))


class AsyncApprovalsMixin:
    """Approval methods of AsyncProctorClient; the same as ApprovalsMixin, awaited."""

    _channel: Any
    options: Any

    async def _call(self, method: Any, name: str, request: Any, timeout: Any) -> Any:
        raise NotImplementedError  # provided by AsyncProctorClient

    async def evaluate(self, *args: Any, **kwargs: Any) -> DecisionResult:
        raise NotImplementedError  # provided by AsyncProctorClient

    @property
    def _approval_stub(self) -> approvals_pb2_grpc.ApprovalsStub:
        stub = self.__dict__.get("_approvals_stub_")
        if stub is None:
            stub = self.__dict__["_approvals_stub_"] = approvals_pb2_grpc.ApprovalsStub(
                self._channel)
        return stub

    async def get_approval(self, approval_id: str, *, timeout: Any = _DEFAULT) -> ApprovalState:
        """See ApprovalsMixin.get_approval."""
        t = self.options.timeout if timeout is _DEFAULT else timeout
        a = await self._call(self._approval_stub.GetApproval, "GetApproval",
                             approvals_pb2.GetApprovalRequest(approval_id=approval_id), t)
        return ApprovalState.from_proto(a)

    async def resolve_approval(self, approval_id: str, approve: bool, *, reviewer: str = "",
                               reason: str = "", timeout: Any = _DEFAULT) -> ApprovalState:
        """See ApprovalsMixin.resolve_approval."""
        t = self.options.timeout if timeout is _DEFAULT else timeout
        a = await self._call(self._approval_stub.ResolveApproval, "ResolveApproval",
                             _resolve_request(approval_id, approve, reviewer, reason), t)
        return ApprovalState.from_proto(a)

    async def wait_for_approval(self, approval_id: str, *,
                                timeout: float = DEFAULT_WAIT_SECONDS) -> ApprovalState:
        """See ApprovalsMixin.wait_for_approval."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return await self.get_approval(approval_id)
            request, deadline = _wait_request(approval_id, min(left, timeout))
            a = ApprovalState.from_proto(await self._call(
                self._approval_stub.WaitApproval, "WaitApproval", request, deadline))
            if not a.pending or end - time.monotonic() <= 0:
                return a

    async def _await_decision(self, first: DecisionResult, request: Any,
                              wait: float) -> DecisionResult:
        """See ApprovalsMixin._await_decision."""
        started = time.monotonic()
        try:
            state = await self.wait_for_approval(first.approval_id, timeout=wait)
        except ProctorError as error:
            if self.options.fail_closed and error.code.name != "INVALID_ARGUMENT":
                return DecisionResult.fail_closed_deny(f"waiting for approval: {error}")
            raise
        out = settled(first, state, time.monotonic() - started)
        if out is not None:
            return out
        return await self.evaluate(with_approval(request, first.approval_id))


__all__ = ["ApprovalState", "ApprovalsMixin", "AsyncApprovalsMixin", "waits"]
