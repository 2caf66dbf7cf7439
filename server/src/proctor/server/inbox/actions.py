"""What the pages and the API do, once: list, get and resolve approvals as one principal.

Visibility (access.Reviewer.sees): an approval outside the caller's tenants or
approver groups is answered as not found, so the inbox never tells one tenant
what another has pending. Resolving records the caller as the reviewer (never
a field it fills in) and refuses a principal's own request.
"""

from __future__ import annotations

from typing import Any

from .. import auth
from ..approvals.store import MAX_LIST_LIMIT, PENDING, Approval, ApprovalNotFound, InvalidArgument
from .access import Reviewer
from .views import pending_first, resolved

STATES = ("pending", "resolved", "all")


class Forbidden(Exception):
    """The caller may see the approval but not do this to it (PERMISSION_DENIED)."""


def requester_of(a: Approval) -> str:
    """The principal that asked for the approval, when the approval records one."""
    return str(getattr(a.draft, "requested_by", "") or "")


async def visible_approvals(inbox: Any, who: Reviewer, state: str = "pending",
                            tenant: str = "", limit: int = 100) -> list[Approval]:
    if state not in STATES:
        raise InvalidArgument("state", f"must be one of {', '.join(STATES)}, got {state!r}")
    if not tenant and not who.all_tenants and len(who.tenants) == 1:
        tenant = next(iter(who.tenants))
    status = PENDING if state == "pending" else ""
    listed: list[Approval] = await inbox.service.list(status, "", tenant, MAX_LIST_LIMIT)
    items = [a for a in listed if who.sees(a)]
    if state == "pending":
        items = pending_first(items)
    elif state == "resolved":
        items = resolved(items)
    return items[:limit]


async def visible_approval(inbox: Any, who: Reviewer, approval_id: str) -> Approval:
    a: Approval = await inbox.service.get(approval_id)
    if not who.sees(a):
        raise ApprovalNotFound(f"no approval {approval_id}")
    return a


async def resolve(inbox: Any, who: Reviewer, approval_id: str, approve: bool,
                  reason: str) -> Approval:
    a = await visible_approval(inbox, who, approval_id)
    if not who.may_use_inbox:
        raise Forbidden(f"principal {who.id} has neither the reviewer nor the admin role")
    requester = requester_of(a)
    if requester and requester == who.id:
        raise Forbidden(f"principal {who.id} requested approval {approval_id} and cannot "
                        "resolve it (no self approval)")
    if who.principal is not None:  # the audit's caller is this reviewer
        auth.acting_as(who.principal)
    try:
        out: Approval = await inbox.service.resolve(approval_id, approve, who.id,
                                                    reason.strip(), who.principal)
    except auth.Denied as e:
        raise Forbidden(e.message) from None
    return out


def policy_data(holder: Any) -> dict[str, Any]:
    from ..audit.event import format_time

    current = holder.current
    return {
        "policy_version": current.policy_version,
        "rules": current.rule_count,
        "path": holder.path,
        "loaded_at": format_time(holder.loaded_at),
        "last_reload_at": format_time(holder.last_reload_at),
        "last_reload_error": holder.last_reload_error,
    }
