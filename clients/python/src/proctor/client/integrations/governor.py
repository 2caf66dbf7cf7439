"""The steps every integration takes around a tool call, on a (blocking) ProctorClient.

    governor = ToolGovernor(client, agent="mailer", mapping=ToolMapping(...),
                            budget_unit="tool_calls")
    verdict = governor.decide(ToolCall("send_email", {"to": "x"}, call_id="call_1"))
    verdict = governor.refresh(verdict)       # while verdict.pending: a reviewer's answer?
    verdict = governor.claim(verdict)         # approved: present the grant, once, right before
    if verdict.allowed:
        with governor.spending(verdict):      # reserve; commit after, release on failure
            run_the_tool()
    else:
        tell_the_model(verdict.message)

Everything fails closed, whatever the client's own `fail_closed`: a call Proctor could
not decide (unreachable, a request it called invalid, a require_approval with no approval
id because its store was away) is a denial whose message says why, and a budget that
could not be reserved stops the tool. Async integrations run these calls in a worker
thread (`asyncio.to_thread`, which carries the delegation path), so one code path decides.

The delegation path of a call is the current `delegation()` path with the governor's
`agent` acting (appended unless already last); the tool then runs under that path, so a
sub-agent it starts evaluates with the whole chain.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..approvals import ApprovalState
from ..budgets import FAIL_CLOSED_BUDGET, Reservation
from ..client import ProctorClient
from ..delegation import _PATH, delegation_path, extend
from ..errors import ProctorError
from ..results import ALLOW, DENY, REQUIRE_APPROVAL, DecisionResult, EvaluationRequest
from .mapping import ToolCall, ToolMapping

log = logging.getLogger("proctor.client.integrations")

# Verdict states.
ALLOWED = "allowed"        # allow: run it
APPROVED = "approved"      # a reviewer approved: claim() it, then run
PENDING = "pending"        # require_approval, the reviewer has not decided
DENIED = "denied"          # deny, a reviewer's denial, or failing closed: never run

DEFAULT_BUDGET_TTL = 300


class ToolRefused(Exception):
    """A budget stopped the tool before it ran; `str()` is the message for the model."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A reservation made for one call, and the amount it reserved."""

    reservation: Reservation
    amount: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What Proctor said about one tool call, and what happens to it."""

    call: ToolCall
    request: EvaluationRequest
    decision: DecisionResult
    state: str
    message: str = ""                       # for the model when not run
    approval: ApprovalState | None = None

    @property
    def allowed(self) -> bool:
        return self.state == ALLOWED

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    @property
    def approval_id(self) -> str:
        return self.decision.approval_id

    @property
    def agent(self) -> str:
        return self.request.delegation_path[-1] if self.request.delegation_path else ""

    def envelope(self) -> dict[str, Any]:
        """The governance envelope of the decision: who asked, through which path, for what,
        under which policy version and rule, and the approval (when there is one)."""
        r, d = self.request, self.decision
        out: dict[str, Any] = {
            "run_id": r.run_id, "tenant": r.tenant, "request_id": r.request_id,
            "delegation_path": list(r.delegation_path), "topic": r.topic,
            "risk_tags": list(r.risk_tags), "derived_tags": list(d.derived_tags),
            "labels": dict(r.labels or {}), "decision": d.decision, "rule_id": d.rule_id,
            "reason": d.reason, "policy_version": d.policy_version,
            "decision_id": d.decision_id, "tool": self.call.name,
            "tool_call_id": self.call.call_id,
        }
        if d.approval_id:
            a = self.approval
            out["approval"] = {
                "approval_id": d.approval_id,
                "status": a.status if a else "pending",
                "approvers": list(a.approvers) if a else [],
                "expires_at": a.expires_at.isoformat() if a and a.expires_at else None,
                "reviewer": a.reviewer if a else "",
                "reason": a.resolution_reason if a else "",
            }
        return out


def denial_text(call: ToolCall, d: DecisionResult) -> str:
    """What the model reads when Proctor denies a call: the rule's reason, verbatim."""
    if d.fail_closed:
        return f"Tool {call.name!r} was not run: {d.reason}"
    return f"Tool {call.name!r} was denied by policy (rule {d.rule_id}): {d.reason}"


def _resolved_text(call: ToolCall, d: DecisionResult, a: ApprovalState) -> str:
    if a.status == "denied":
        by = f" by {a.reviewer}" if a.reviewer else ""
        why = a.resolution_reason or "no reason given"
        return (f"Tool {call.name!r} was not run: approval {a.approval_id} was denied{by}: "
                f"{why} (rule {d.rule_id}: {d.reason})")
    if a.status == "expired":
        return (f"Tool {call.name!r} was not run: approval {a.approval_id} expired before a "
                f"reviewer decided (rule {d.rule_id}: {d.reason})")
    return (f"Tool {call.name!r} was not run: approval {a.approval_id} is {a.status} "
            f"(rule {d.rule_id}: {d.reason})")


class ToolGovernor:
    """Decide, wait on reviewers, claim grants and hold budgets around tool calls."""

    def __init__(
        self,
        client: ProctorClient,
        *,
        agent: str | None = None,
        mapping: ToolMapping | None = None,
        run_id: str = "",
        budget_unit: str | None = None,
        budget_amount: int = 1,
        budget_ttl: int = DEFAULT_BUDGET_TTL,
    ) -> None:
        if not isinstance(client, ProctorClient):
            raise TypeError("integrations take a proctor.client.ProctorClient "
                            f"(got {type(client).__name__})")
        self.client = client
        self.agent = agent
        self.mapping = mapping or ToolMapping()
        self.run_id = run_id
        self.budget_unit = budget_unit
        self.budget_amount = budget_amount
        self.budget_ttl = budget_ttl

    # -- deciding ---------------------------------------------------------------------------

    def path(self, agent: str | None = None) -> tuple[str, ...]:
        """The delegation path a call is decided on: the current one, `agent` acting."""
        return extend(delegation_path(), agent or self.agent)

    def request(self, call: ToolCall, *, agent: str | None = None, run_id: str | None = None,
                scope: str = "") -> EvaluationRequest:
        return self.mapping.request(
            call, delegation_path=self.path(agent),
            run_id=self.run_id if run_id is None else run_id, scope=scope,
        )

    def _evaluate(self, request: EvaluationRequest) -> DecisionResult:
        if not request.delegation_path:
            return DecisionResult.fail_closed_deny(
                "no delegation path: give the integration an agent, or call it inside "
                "proctor.client.delegation(...)")
        try:
            return self.client.evaluate(request)
        except ProctorError as error:  # fail closed, InvalidRequestError included
            return DecisionResult.fail_closed_deny(f"{error.code.name}: {error.details}")

    def decide(self, call: ToolCall, *, agent: str | None = None, run_id: str | None = None,
               scope: str = "") -> Verdict:
        """Evaluate a call; for require_approval, look up where its approval stands."""
        request = self.request(call, agent=agent, run_id=run_id, scope=scope)
        return self.judge(call, request, self._evaluate(request))

    def judge(self, call: ToolCall, request: EvaluationRequest, d: DecisionResult) -> Verdict:
        """The verdict of an answer Proctor gave (decide's second half)."""
        if d.decision == ALLOW:
            return Verdict(call, request, d, ALLOWED)
        if d.decision == REQUIRE_APPROVAL and d.approval_id:
            return self.refresh(Verdict(call, request, d, PENDING))
        if d.decision == REQUIRE_APPROVAL:  # no id: the approval store was away
            return Verdict(call, request, d, DENIED,
                           f"Tool {call.name!r} was not run: it needs approval and none "
                           f"could be requested: {d.reason}")
        return Verdict(call, request, d, DENIED, denial_text(call, d))

    def refresh(self, v: Verdict) -> Verdict:
        """A pending verdict after asking where its approval stands now."""
        if v.state not in (PENDING, APPROVED):
            return v
        try:
            a = self.client.get_approval(v.approval_id)
        except ProctorError as error:
            return replace(v, state=DENIED, message=(
                f"Tool {v.call.name!r} was not run: approval {v.approval_id} could not be "
                f"read ({error.code.name}: {error.details})"))
        if a.pending:
            return replace(v, state=PENDING, approval=a)
        if a.approved:
            return replace(v, state=APPROVED, approval=a)
        return replace(v, state=DENIED, approval=a, message=_resolved_text(v.call, v.decision, a))

    def claim(self, v: Verdict) -> Verdict:
        """Present an approved grant (consuming it) right before the tool runs: allow once for
        this very action. Anything but approved is returned as it is."""
        if v.state != APPROVED:
            return v
        d = self._evaluate(replace(v.request, approval_id=v.approval_id))
        if d.decision == ALLOW:
            return replace(v, decision=d, state=ALLOWED)
        if d.decision == DENY:
            return replace(v, decision=d, state=DENIED, message=denial_text(v.call, d))
        return replace(v, decision=d, state=DENIED, message=(
            f"Tool {v.call.name!r} was not run: approval {v.approval_id} could not be used: "
            f"{d.reason}"))

    def wait(self, v: Verdict, seconds: float) -> Verdict:
        """Wait up to `seconds` for the reviewer of a pending verdict."""
        if not v.pending or seconds <= 0:
            return v
        try:
            self.client.wait_for_approval(v.approval_id, timeout=seconds)
        except ProctorError as error:
            return replace(v, state=DENIED, message=(
                f"Tool {v.call.name!r} was not run: waiting for approval {v.approval_id} "
                f"failed ({error.code.name}: {error.details})"))
        return self.refresh(v)

    # -- budgets ----------------------------------------------------------------------------

    def amount(self, call: ToolCall) -> int:
        rule = self.mapping.rule(call.name)
        return self.budget_amount if rule.budget_amount is None else rule.budget_amount

    def reserve(self, v: Verdict) -> Hold | None:
        """Reserve the call's amount where the policy has a budget of the unit; None when no
        unit is configured. Raises ToolRefused when a budget refuses or cannot answer."""
        if not self.budget_unit:
            return None
        r, amount = v.request, self.amount(v.call)
        try:
            held = self.client.reserve(
                self.budget_unit, amount, tenant=r.tenant, agent_id=v.agent,
                run_id=r.run_id, ttl_seconds=self.budget_ttl, allow_unbudgeted=True,
            )
        except ProctorError as error:
            raise ToolRefused(f"Tool {v.call.name!r} was not run: its budget could not be "
                              f"reserved ({error.code.name}: {error.details})") from None
        if not held.granted:
            why = ("Proctor did not answer" if held.refused_by == FAIL_CLOSED_BUDGET
                   else f"budget {held.refused_by!r} has no room")
            raise ToolRefused(f"Tool {v.call.name!r} was not run: {why} for "
                              f"{amount} {self.budget_unit}")
        return Hold(held, amount) if held.held else None

    def settle(self, hold: Hold | None, *, ok: bool, actual: int | None = None) -> None:
        """Commit at `actual` (default: the amount reserved) when `ok`, else release; a
        failure is logged, never raised: the tool has run by now, and an unsettled
        reservation returns to the pool at its TTL."""
        if hold is None:
            return
        r = hold.reservation
        try:
            if ok and not r.lease:
                self.client.commit(r.reservation_id, hold.amount if actual is None else actual)
            else:
                self.client.release(r.reservation_id)
        except ProctorError as error:
            log.warning("reservation %s not settled (%s); it expires at its TTL",
                        r.reservation_id, error)

    @contextlib.contextmanager
    def spending(self, v: Verdict) -> Iterator[Hold | None]:
        """Reserve, run the block, commit after it or release when it raises."""
        held = self.reserve(v)
        try:
            yield held
        except BaseException:
            self.settle(held, ok=False)
            raise
        self.settle(held, ok=True)


@contextlib.contextmanager
def acting(path: Sequence[str]) -> Iterator[None]:
    """Run a block under exactly `path` (the tool of a call runs under its call's path)."""
    token = _PATH.set(tuple(path))
    try:
        yield
    finally:
        _PATH.reset(token)


__all__ = [
    "ALLOWED",
    "APPROVED",
    "DENIED",
    "PENDING",
    "Hold",
    "ToolGovernor",
    "ToolRefused",
    "Verdict",
    "acting",
    "denial_text",
]
