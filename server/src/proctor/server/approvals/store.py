"""The approval store seam: what the Approvals service and the Decisions gate ask of a store.

An approval (DESIGN section 5) is a require_approval decision waiting for a
human. It carries the whole request, the rule, its reason and approvers, the
policy version, the deciding decision's id, the action hash (binding.py) and
an expiry. This module holds:

- the `ApprovalStore` Protocol the embedded (memory.py) and Redis
  (redis_store.py) stores implement;
- `Approval` (the record) and `Draft` (what a decision hands the store);
- the domain errors the servicer maps to gRPC codes;
- input validation shared by both stores, so bad input touches nothing.

Lifecycle (every transition is atomic in both stores):

    pending --approve--> approved --consume (same action hash)--> consumed
       |                    |
       |--deny--> denied    '--its use-by passes--> expired
       '--its expiry passes--> expired

Choices where DESIGN is silent (the contract suite holds both stores to them):

- `expires_at` is the approval's current deadline: while pending, the time
  by which a reviewer must resolve it (created + approval_ttl); once
  approved, the time by which the agent must use it (approved + approval_ttl:
  a grant given at the last minute is still usable). Past it, a pending or
  approved approval becomes EXPIRED, which counts as denied.
- Idempotent retries: (tenant, request_id) points at the approval it created
  while that approval lives (pending, approved or denied, until its
  `expires_at`); a retry of the same action returns it (`created` False). A
  retry whose action hash differs (the same request_id reused for another
  action) gets a new approval, which the index then points at. An empty
  request_id always creates a new one. Once consumed or expired, a new one.
- Resolving anything but a pending approval is FailedPrecondition naming the
  state (an expired one included). A reviewer is required (1..128 chars); a
  reason is required to deny (up to 1,024 chars), optional to approve.
- At most `max_pending_per_tenant` approvals of one tenant are pending at once
  (--max-pending-approvals-per-tenant, DEFAULT_MAX_PENDING_PER_TENANT = 1,000);
  creating one more for that tenant is TenantFull, and other tenants are not
  affected. At most MAX_OPEN_APPROVALS (100,000) approvals are open (pending or
  approved) in the whole fleet at once, a backstop for Redis's memory; one more
  is StoreFull. Retries of existing approvals still answer either way, and the
  decision stays require_approval, without an id, with a reason that says so.
- Records are kept for RETENTION_SECONDS (7 days) after their last deadline,
  then dropped (Redis: key expiry); ListApprovals shows newest first.
- Expiry is applied lazily by every operation and by `expire_due()`, which the
  service runs every second. Each transition to EXPIRED is reported exactly
  once (also across servers sharing a Redis) to the store's `on_expired`
  listener, so it is audited once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
EXPIRED = "expired"
CONSUMED = "consumed"
STATUSES = (PENDING, APPROVED, DENIED, EXPIRED, CONSUMED)

MAX_ID_CHARS = 128
MAX_REVIEWER_CHARS = 128
MAX_REASON_CHARS = 1024
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
RETENTION_SECONDS = 7 * 86400
MAX_TTL_SECONDS = 30 * 86400
MAX_OPEN_APPROVALS = 100_000  # pending + approved at once, per store (fleet)
DEFAULT_MAX_PENDING_PER_TENANT = 1000  # --max-pending-approvals-per-tenant

# Why a presented approval could not unlock an action (ConsumeResult.refusal).
NOT_FOUND = "not_found"
MISMATCH = "mismatch"


# -- errors -----------------------------------------------------------------------------------


class ApprovalError(Exception):
    """Base of the approval domain errors; `.message` is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ApprovalError):
    """Bad input (gRPC INVALID_ARGUMENT); `.field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ApprovalNotFound(ApprovalError):
    """No approval with that id (gRPC NOT_FOUND)."""


class FailedPrecondition(ApprovalError):
    """The approval's state forbids the operation (gRPC FAILED_PRECONDITION)."""


class StoreFull(ApprovalError):
    """MAX_OPEN_APPROVALS are open: no new approval is created (a runaway agent cannot fill
    the store); the decision stays require_approval without an id."""


class TenantFull(StoreFull):
    """The tenant has its most approvals pending already: no new one for it until some are
    resolved or expire (other tenants are unaffected)."""


def tenant_full_message(tenant: str, limit: int) -> str:
    return (f"tenant {tenant!r} has {limit} approvals pending already "
            "(--max-pending-approvals-per-tenant): no new approval until some are resolved "
            "or expire")


class StoreUnavailable(ApprovalError):
    """The store cannot be reached within its bounded timeout (gRPC UNAVAILABLE)."""


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Draft:
    """What a require_approval decision hands the store: the request and the decision."""

    request_id: str
    run_id: str
    tenant: str
    delegation_path: tuple[str, ...]
    topic: str
    risk_tags: tuple[str, ...]
    derived_tags: tuple[str, ...]
    labels: dict[str, str]
    rule_id: str
    reason: str
    approvers: tuple[str, ...]
    policy_version: str
    decision_id: str
    action_hash: str
    ttl_seconds: int
    # The principal whose request asked for the approval ("" in the development mode):
    # it may not resolve the approval itself.
    requested_by: str = ""

    def body(self) -> dict[str, Any]:
        """The immutable part of the record, as JSON-ready data."""
        return {
            "request_id": self.request_id,
            "run_id": self.run_id,
            "tenant": self.tenant,
            "delegation_path": list(self.delegation_path),
            "topic": self.topic,
            "risk_tags": list(self.risk_tags),
            "derived_tags": list(self.derived_tags),
            "labels": dict(self.labels),
            "rule_id": self.rule_id,
            "reason": self.reason,
            "approvers": list(self.approvers),
            "policy_version": self.policy_version,
            "decision_id": self.decision_id,
            "action_hash": self.action_hash,
            "ttl_seconds": self.ttl_seconds,
            "requested_by": self.requested_by,
        }


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval as the store holds it. Times are epoch seconds (millisecond precision);
    0 means not yet."""

    approval_id: str
    status: str
    draft: Draft
    created_at: float
    expires_at: float
    resolved_at: float = 0.0
    reviewer: str = ""
    resolution_reason: str = ""
    consumed_at: float = 0.0
    consumed_by: str = ""  # the decision_id that used the grant

    def __getattr__(self, name: str) -> Any:
        # The request fields read straight through: a.topic, a.tenant, a.approvers ...
        return getattr(object.__getattribute__(self, "draft"), name)

    def with_(self, **changes: Any) -> Approval:
        return replace(self, **changes)

    @property
    def open(self) -> bool:
        """Pending or approved: its expiry still matters."""
        return self.status in (PENDING, APPROVED)

    def may_be_resolved_by(self, group: str) -> bool:
        """An approver-group filter: no approvers (a default require_approval) means anyone."""
        return not self.draft.approvers or group in self.draft.approvers


@dataclass(frozen=True, slots=True)
class CreateResult:
    approval: Approval
    created: bool  # False: an idempotent retry returned the existing approval


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    """The answer to presenting an approval id with an action.

    `consumed` True: the grant was used now (approval's status CONSUMED).
    Otherwise `refusal` says why: NOT_FOUND, MISMATCH (another action), or the
    approval's status (pending, denied, expired, consumed).
    """

    consumed: bool
    refusal: str
    approval: Approval | None


ExpiredListener = Callable[[tuple[Approval, ...]], Awaitable[None]]


# -- the seam ---------------------------------------------------------------------------------


@runtime_checkable
class ApprovalStore(Protocol):
    """Where approvals live: embedded (memory.py) or Redis (redis_store.py).

    Every method validates its input first (InvalidArgument, nothing touched),
    applies due expiries, then acts atomically. StoreUnavailable when the
    backing store cannot be reached within the bounded timeout.
    """

    on_expired: ExpiredListener | None

    async def create(self, draft: Draft) -> CreateResult:
        """Create a pending approval expiring after `draft.ttl_seconds`, or, for a retry of
        the same tenant + request_id + action hash while that approval lives, return it."""
        ...

    async def get(self, approval_id: str) -> Approval:
        """The approval now; ApprovalNotFound for an unknown (or long-gone) id."""
        ...

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        """Return once the approval is no longer pending (resolved or expired) or after
        `timeout` seconds (then the approval as last seen, pending, with no further call to
        the backing store, so many waits ending together cost nothing more);
        ApprovalNotFound for an unknown id."""
        ...

    async def list(
        self, status: str = "", approver: str = "", tenant: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[Approval]:
        """Newest first, filtered by status (empty: any), by approver group (approvals that
        group may resolve, those without approvers included) and tenant; at most `limit`."""
        ...

    async def resolve(
        self, approval_id: str, approve: bool, reviewer: str, reason: str
    ) -> Approval:
        """Approve or deny a pending approval. ApprovalNotFound; FailedPrecondition when it
        is not pending (resolved, consumed or expired)."""
        ...

    async def consume(self, approval_id: str, action_hash: str, decision_id: str) -> ConsumeResult:
        """Use an approved grant for the action with `action_hash`: approved and same hash
        -> CONSUMED (once; atomically, so two racing callers cannot both use it)."""
        ...

    async def expire_due(self) -> tuple[Approval, ...]:
        """Expire every open approval past its deadline; return (and report) them."""
        ...

    async def start(self) -> None:
        """Connect and prepare before serving; StoreUnavailable when unreachable."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; StoreUnavailable otherwise (for health)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


def new_approval_id() -> str:
    """"apv_" + 12 hex digits of Unix milliseconds + 20 random hex digits: sortable by
    creation time, unguessable (the id is also bound to its action by hash)."""
    return f"apv_{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


# -- validation (shared by both stores) -------------------------------------------------------


def check_id(approval_id: str) -> None:
    if not approval_id:
        raise InvalidArgument("approval_id", "must not be empty")
    if len(approval_id) > MAX_ID_CHARS:
        raise InvalidArgument(
            "approval_id", f"at most {MAX_ID_CHARS} characters, got {len(approval_id)}"
        )


def check_draft(draft: Draft) -> None:
    if not 1 <= draft.ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument(
            "approval_ttl", f"must be 1..{MAX_TTL_SECONDS} seconds, got {draft.ttl_seconds}"
        )
    if not draft.action_hash:
        raise InvalidArgument("action_hash", "must not be empty")


def check_resolution(approval_id: str, approve: bool, reviewer: str, reason: str) -> None:
    check_id(approval_id)
    if not reviewer.strip():
        raise InvalidArgument("reviewer", "must not be empty")
    if len(reviewer) > MAX_REVIEWER_CHARS:
        raise InvalidArgument(
            "reviewer", f"at most {MAX_REVIEWER_CHARS} characters, got {len(reviewer)}"
        )
    if not approve and not reason.strip():
        raise InvalidArgument("reason", "must not be empty when denying")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters, got {len(reason)}")


def check_list(status: str, approver: str, tenant: str, limit: int) -> int:
    """Validate a list query; return the effective limit."""
    if status and status not in STATUSES:
        raise InvalidArgument("status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
    if len(approver) > MAX_ID_CHARS:
        raise InvalidArgument("approver", f"at most {MAX_ID_CHARS} characters")
    if len(tenant) > MAX_ID_CHARS:
        raise InvalidArgument("tenant", f"at most {MAX_ID_CHARS} characters")
    if limit < 0:
        raise InvalidArgument("limit", f"must not be negative, got {limit}")
    if limit > MAX_LIST_LIMIT:
        raise InvalidArgument("limit", f"at most {MAX_LIST_LIMIT}, got {limit}")
    return limit or DEFAULT_LIST_LIMIT


def precondition_message(a: Approval) -> str:
    return f"approval {a.approval_id} is {a.status}, not pending: it cannot be resolved again"


def draft_from_body(body: dict[str, Any]) -> Draft:
    """The inverse of Draft.body (tolerant of JSON's lists)."""
    return Draft(
        request_id=str(body.get("request_id", "")),
        run_id=str(body.get("run_id", "")),
        tenant=str(body.get("tenant", "")),
        delegation_path=tuple(body.get("delegation_path") or ()),
        topic=str(body.get("topic", "")),
        risk_tags=tuple(body.get("risk_tags") or ()),
        derived_tags=tuple(body.get("derived_tags") or ()),
        labels=dict(body.get("labels") or {}),
        rule_id=str(body.get("rule_id", "")),
        reason=str(body.get("reason", "")),
        approvers=tuple(body.get("approvers") or ()),
        policy_version=str(body.get("policy_version", "")),
        decision_id=str(body.get("decision_id", "")),
        action_hash=str(body.get("action_hash", "")),
        ttl_seconds=int(body.get("ttl_seconds", 3600)),
        requested_by=str(body.get("requested_by", "")),
    )
