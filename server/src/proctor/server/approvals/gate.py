"""The approval step of an Evaluate: what the Decisions service asks after the engine decided.

`ApprovalGate.apply(request, decision, presented_id, decision_id)` returns the
final decision, reason and approval id, plus fields for the decision's audit
event:

- The engine said allow or deny: nothing changes. A presented approval id is
  ignored (never consumed; a deny is never overridden) and not echoed.
- require_approval, no id presented: an approval is created (or, for a retry
  of the same tenant + request_id + action, the live one is returned) and its
  id answered. A retry whose live approval was denied answers deny, as below.
- require_approval with an id presented: the gate tries to consume it for this
  action (action hash, binding.py). Approved and bound to this action: the
  decision becomes allow, once; rule_id stays the rule that asked for
  approval, the reason says who approved it, and the id is echoed. Still
  pending and bound to this action: the same id is answered again (no second
  approval) and the reason says it is pending. Denied and bound to this action:
  the answer is deny, naming the reviewer and their reason, and the id is
  echoed; an agent that retries a refused action is told no, rather than
  opening a new approval on every retry. Anything else (unknown,
  another action, expired, already used): the id changes nothing; the
  request is handled as if no id had been presented (so the caller gets a
  fresh approval to wait on), and the reason says why the id was not used.
- The store cannot be reached, or the tenant has its most approvals pending
  (--max-pending-approvals-per-tenant): the decision stays require_approval,
  with no id and a reason that says so. While the service's health probe finds the store
  down, the gate does not wait for it (the answer is immediate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from .. import auth
from ..audit.log import AuditLog
from . import metrics
from .binding import action_hash
from .events import approval_event
from .feed import ApprovalFeed
from .store import (
    CONSUMED,
    DENIED,
    EXPIRED,
    MISMATCH,
    NOT_FOUND,
    PENDING,
    ApprovalError,
    ApprovalStore,
    Draft,
    StoreFull,
    StoreUnavailable,
    TenantFull,
)

log = logging.getLogger("proctor.approvals")

ALLOW = "allow"
REQUIRE_APPROVAL = "require_approval"

_WHY = {
    NOT_FOUND: "no such approval",
    MISMATCH: "it was granted for another action",
    DENIED: "it was denied",
    EXPIRED: "it has expired",
    CONSUMED: "it was already used",
}


@dataclass(frozen=True, slots=True)
class GateResult:
    decision: str
    reason: str
    approval_id: str
    audit: dict[str, Any] = field(default_factory=dict)  # added to the decision's audit event


class ApprovalGate:
    """Creates approvals for require_approval decisions and consumes presented grants."""

    def __init__(self, store: ApprovalStore, audit: AuditLog,
                 feed: ApprovalFeed | None = None) -> None:
        self._store = store
        self._audit = audit
        # Told of every approval created here (the inbox's live pages, the webhooks).
        self.feed = feed or ApprovalFeed()
        # Set by the Approvals service's health probe: False while the store is unreachable.
        self.available = True

    async def apply(self, req: Any, decision: Any, presented: str, decision_id: str) -> GateResult:
        """`req` an engine.Request, `decision` an engine.Decision (see the module docstring)."""
        if decision.decision != REQUIRE_APPROVAL:
            ignored = {"approval_presented": presented, "approval_use": "ignored"}
            return GateResult(decision.decision, decision.reason, "", ignored if presented else {})
        if not self.available:
            return self._unavailable(decision, "the store did not answer the last health probe",
                                     presented)
        digest = action_hash(
            tenant=req.tenant, run_id=req.run_id, delegation_path=req.delegation_path,
            topic=req.topic, risk_tags=req.risk_tags, derived_tags=decision.derived_tags,
            labels=req.labels,
        )
        note = ""
        extra: dict[str, Any] = {}
        try:
            if presented:
                used = await self._store.consume(presented, digest, decision_id)
                extra = {"approval_presented": presented}
                a = used.approval
                if used.consumed and a is not None:
                    await self._audit.record("approval", approval_event("consumed", a))
                    extra["approval_use"] = "consumed"
                    by = f"approved by {a.reviewer}" + (
                        f": {a.resolution_reason}" if a.resolution_reason else "")
                    return GateResult(
                        ALLOW, f"{decision.reason} ({by}; approval {presented} used)",
                        presented, extra,
                    )
                extra["approval_use"] = used.refusal
                if used.refusal == PENDING:
                    return GateResult(
                        REQUIRE_APPROVAL,
                        f"{decision.reason} (approval {presented} is still pending)",
                        presented, extra,
                    )
                if used.refusal == DENIED and used.approval is not None:
                    return _denied(decision, used.approval, extra)
                note = f"; approval {presented} not used: {_WHY.get(used.refusal, used.refusal)}"
            draft = Draft(
                request_id=req.request_id, run_id=req.run_id, tenant=req.tenant,
                delegation_path=tuple(req.delegation_path), topic=req.topic,
                risk_tags=tuple(req.risk_tags), derived_tags=tuple(decision.derived_tags),
                labels=dict(req.labels or {}), rule_id=decision.rule_id, reason=decision.reason,
                approvers=tuple(decision.approvers), policy_version=decision.policy_version,
                decision_id=decision_id, action_hash=digest,
                ttl_seconds=int(decision.approval_ttl_seconds),
                requested_by=auth.requester(),
            )
            made = await self._store.create(draft)
        except StoreUnavailable as e:
            why = e.message.removeprefix("approval store unavailable: ")
            return self._unavailable(decision, why, presented)
        except StoreFull as e:  # a tenant's (or the fleet's) limit: expected under a flood
            metrics.NOT_CREATED.labels("tenant_full" if isinstance(e, TenantFull)
                                       else "store_full").inc()
            return self._unavailable(decision, e.message, presented, "approval not created")
        except ApprovalError as e:  # a policy ttl outside the store's bounds, say
            log.error("approval not created: %s", e.message)
            return self._unavailable(decision, e.message, presented,
                                     "approval not created")
        a = made.approval
        if made.created:
            await self._audit.record("approval", approval_event("created", a))
            self.feed.publish("created", a)
        else:
            extra["approval_retry"] = True
            if a.status == DENIED:
                return _denied(decision, a, extra)
        reason = decision.reason + (f" ({note[2:]})" if note else "")
        return GateResult(REQUIRE_APPROVAL, reason, a.approval_id, extra)

    @staticmethod
    def _unavailable(decision: Any, why: str, presented: str,
                     what: str = "approval store unavailable") -> GateResult:
        extra = {"approval_presented": presented} if presented else {}
        extra["approval_error"] = why
        return GateResult(REQUIRE_APPROVAL, f"{decision.reason} ({what}: {why})", "", extra)


def _denied(decision: Any, a: Any, extra: dict[str, Any]) -> GateResult:
    """A reviewer already refused this very action: answer deny, saying who and why."""
    extra["approval_use"] = DENIED
    by = f"denied by {a.reviewer or 'a reviewer'}" + (
        f": {a.resolution_reason}" if a.resolution_reason else "")
    return GateResult("deny", f"{decision.reason} ({by}; approval {a.approval_id})",
                      a.approval_id, extra)
