"""Callers: principals, credentials and what each role may do (DESIGN section 12).

- principal.py: Principal, the roles, and the tenant/agent checks (`authorize`);
- principals.py: the --principals file and its reloading holder;
- tokens.py: bearer tokens, stored as SHA-256 only;
- authenticate.py: credentials (bearer token, JWT, client certificate) -> Principal;
- guard.py: the generic handler that authenticates every closed call and checks
  its role; handlers read the principal with `caller()`.

For other front doors (the reviewer inbox): `Authenticator.bearer("Bearer <token>")`
gives the Principal of a token or JWT (raising AuthFailed), and `allows(principal,
role, tenant)` says whether it may act in that role on that tenant.
"""

from __future__ import annotations

from typing import Any

from .authenticate import Authenticator, AuthFailed
from .guard import (
    METHOD_ROLES,
    SYSTEM_CALLER,
    Guard,
    acting_as,
    audit_caller,
    caller,
    requester,
)
from .principal import (
    ADMIN,
    AGENT,
    ANONYMOUS_ADMIN,
    AUDITOR,
    REVIEWER,
    ROLES,
    Denied,
    Principal,
    authorize,
    check_agent,
    check_reviewer,
    require_role,
    tenant_for,
)
from .principals import PrincipalsError, PrincipalSet, PrincipalsHolder, load_principals


def allows(principal: Principal, role: str, tenant: str | None = None) -> bool:
    """True when `principal` holds `role` (admin holds all) and, if given, `tenant`."""
    if principal.unrestricted:
        return True
    if not principal.has_role(role):
        return False
    return tenant is None or principal.has_tenant(tenant)


def readable_tenants(principal: Principal, flt: Any) -> frozenset[str] | None:
    """The tenants whose audit events `principal` may read (None: every tenant).

    `flt` is the stream's filter (its `tenant` attribute): a tenant the principal lacks
    raises Denied; an empty one becomes the principal's only tenant when it has one.
    """
    if principal.unrestricted:
        return None
    if flt.tenant or principal.sole_tenant:
        flt.tenant = tenant_for(principal, flt.tenant)
    return None if "*" in principal.tenants else frozenset(principal.tenants)


__all__ = [
    "ADMIN", "AGENT", "ANONYMOUS_ADMIN", "AUDITOR", "METHOD_ROLES", "REVIEWER", "ROLES",
    "SYSTEM_CALLER", "AuthFailed", "Authenticator", "Denied", "Guard", "Principal",
    "PrincipalSet", "PrincipalsError", "PrincipalsHolder", "acting_as", "allows",
    "audit_caller", "authorize", "caller", "check_agent", "check_reviewer", "load_principals",
    "readable_tenants", "requester", "require_role", "tenant_for",
]
