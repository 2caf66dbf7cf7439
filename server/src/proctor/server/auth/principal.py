"""Who is calling: a Principal, its roles, tenants, agents and groups, and the checks on them.

DESIGN section 12. Roles: `agent` (Evaluate*, budgets, Get/WaitApproval,
WatchPolicy, IngestDecisions, ProbeTopics), `reviewer` (List/Get/Resolve
approvals), `auditor` (StreamDecisions), `admin` (everything). Tenants and
agents are checked per request by `authorize`: a tenant must be one of the
principal's (or it holds "*"); the acting agent (the last of the delegation
path) must match one of its agent patterns (fnmatch, e.g. "research-*").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

AGENT = "agent"
REVIEWER = "reviewer"
AUDITOR = "auditor"
ADMIN = "admin"
ROLES = (AGENT, REVIEWER, AUDITOR, ADMIN)
ANY = "*"

# How a principal proved who it is (the audit's caller.method).
BY_TOKEN = "token"
BY_MTLS = "mtls"
BY_JWT = "jwt"
BY_NOTHING = "none"  # the development mode: loopback, no authentication configured


class Denied(Exception):
    """A valid principal outside its rights: PERMISSION_DENIED with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Principal:
    """One caller: an id, roles, tenants ("*" = every one), agent patterns, groups."""

    id: str
    roles: frozenset[str]
    tenants: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    groups: frozenset[str] = frozenset()
    identities: tuple[str, ...] = ()
    method: str = BY_TOKEN
    # Every role, every tenant, every agent: the checks are skipped (the anonymous admin).
    unrestricted: bool = field(default=False, compare=False)

    def by(self, method: str) -> Principal:
        """The same principal, authenticated by `method`."""
        return self if method == self.method else replace(self, method=method)

    def has_role(self, role: str) -> bool:
        return role in self.roles or ADMIN in self.roles

    def has_tenant(self, tenant: str) -> bool:
        return ANY in self.tenants or tenant in self.tenants

    def may_act_as(self, agent: str) -> bool:
        return any(fnmatchcase(agent, pattern) for pattern in self.agents)

    @property
    def sole_tenant(self) -> str:
        """The principal's tenant when it has exactly one (not "*"), else ""."""
        if len(self.tenants) == 1 and self.tenants[0] != ANY:
            return self.tenants[0]
        return ""

    def audit(self) -> dict[str, str]:
        """The audit's `caller` field: who asked and how it proved it."""
        return {"id": self.id, "method": self.method}


ANONYMOUS_ADMIN = Principal(
    "anonymous", frozenset(ROLES), (ANY,), (ANY,), method=BY_NOTHING, unrestricted=True,
)


def require_role(principal: Principal, roles: frozenset[str], what: str) -> None:
    """Raise Denied unless the principal holds one of `roles` (admin holds them all)."""
    if principal.unrestricted or ADMIN in principal.roles or roles & principal.roles:
        return
    need = " or ".join(sorted(roles)) or ADMIN
    have = ", ".join(sorted(principal.roles)) or "none"
    raise Denied(f"principal {principal.id!r} lacks role {need} for {what} (it has: {have})")


def tenant_for(principal: Principal, tenant: str) -> str:
    """The tenant a request acts on: `tenant`, or the principal's only one when empty.

    Raises Denied when the principal may not act on it.
    """
    if principal.unrestricted:
        return tenant
    if not tenant and principal.sole_tenant:
        return principal.sole_tenant
    if not principal.has_tenant(tenant):
        have = ", ".join(principal.tenants) or "none"
        name = repr(tenant) if tenant else "'' (no tenant named)"
        raise Denied(
            f"principal {principal.id!r} may not act on tenant {name} (its tenants: {have})"
        )
    return tenant


def check_agent(principal: Principal, agent: str) -> None:
    """Raise Denied unless the principal may act as `agent` (the acting agent).

    Only `agent`-role callers are held to their agent patterns; a reviewer,
    auditor or admin does not act as an agent.
    """
    if principal.unrestricted or AGENT not in principal.roles or ADMIN in principal.roles:
        return
    if not principal.may_act_as(agent):
        have = ", ".join(principal.agents) or "none"
        name = repr(agent) if agent else "'' (empty delegation_path)"
        raise Denied(
            f"principal {principal.id!r} may not act as agent {name} (its agents: {have})"
        )


def check_reviewer(principal: Principal, approval: Any) -> None:
    """May `principal` resolve `approval` (its tenant, requested_by and approvers)?

    Raises Denied: another tenant's approval; one the principal asked for itself (no
    self approval); a rule naming `approvers` none of whose groups the principal is in
    (an admin is exempt from the groups, never from the rule against self approval).
    """
    if principal.unrestricted:
        return
    tenant = approval.tenant
    if not principal.has_tenant(tenant):
        raise Denied(f"principal {principal.id!r} may not resolve approval "
                     f"{approval.approval_id!r} of tenant {tenant!r}")
    if approval.requested_by and approval.requested_by == principal.id:
        raise Denied(f"principal {principal.id!r} asked for approval {approval.approval_id!r} "
                     "itself: another reviewer must resolve it (no self approval)")
    approvers = tuple(approval.approvers)
    if approvers and ADMIN not in principal.roles and not principal.groups & set(approvers):
        raise Denied(f"approval {approval.approval_id!r} needs a reviewer in "
                     f"{', '.join(approvers)}; principal {principal.id!r} is in "
                     f"{', '.join(sorted(principal.groups)) or 'no group'}")


def authorize(principal: Principal, tenant: str, delegation_path: tuple[str, ...] | list[str]
              = (), *, agent: str | None = None) -> str:
    """Check tenant and acting agent of one request; return the tenant to use.

    The acting agent is `agent` when given, else the last of `delegation_path`.
    Raises Denied naming the tenant or agent that is missing.
    """
    if principal.unrestricted:
        return tenant
    tenant = tenant_for(principal, tenant)
    if agent is None:
        agent = delegation_path[-1] if delegation_path else ""
    check_agent(principal, agent)
    return tenant
