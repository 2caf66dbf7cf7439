"""Who is asking, and what they may see and do (DESIGN section 12, for the inbox).

A `Reviewer` is the principal behind a browser session or an API call. The
inbox asks a `TokenLookup` (a callable: token -> Reviewer or None) to turn a
bearer token or a session cookie into one; the server wiring passes the lookup
of proctor.server.auth when principals are configured. With no lookup the
inbox is in the development mode: loopback only, every caller the anonymous
admin, no login (every page says so).

Rules: only the roles `reviewer` and `admin` use the inbox; a reviewer sees
the approvals (and run timelines) of its tenants ("*" = all) and, where a
rule names approvers, only when one of its groups is among them; an admin
sees everything. A principal never resolves an approval it requested (no
self approval): `requested_by` names the requester when the approval records
one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

INBOX_ROLES = frozenset({"reviewer", "admin"})
ANY_TENANT = "*"


@dataclass(frozen=True, slots=True)
class Reviewer:
    """The principal using the inbox."""

    id: str
    roles: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    how: str = "token"  # how it authenticated: development, token, jwt
    # The auth.Principal it was made from (None in the development mode).
    principal: Any = field(default=None, compare=False)

    @classmethod
    def of(cls, principal: Any) -> Reviewer:
        """The inbox's view of an auth.Principal."""
        if principal.unrestricted:
            return DEVELOPMENT
        return cls(id=principal.id, roles=frozenset(principal.roles),
                   tenants=frozenset(principal.tenants), groups=frozenset(principal.groups),
                   how=principal.method, principal=principal)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def may_use_inbox(self) -> bool:
        return bool(self.roles & INBOX_ROLES)

    @property
    def all_tenants(self) -> bool:
        return self.is_admin or ANY_TENANT in self.tenants

    def sees_tenant(self, tenant: str) -> bool:
        return self.all_tenants or tenant in self.tenants

    def sees(self, approval: Any) -> bool:
        """An approval of its tenants whose approver groups (if any) it belongs to."""
        if not self.sees_tenant(approval.tenant):
            return False
        approvers = tuple(approval.approvers)
        return self.is_admin or not approvers or bool(self.groups & set(approvers))


DEVELOPMENT: Reviewer = Reviewer(
    id="anonymous", roles=frozenset({"admin"}), tenants=frozenset({ANY_TENANT}),
    how="development",
)

TokenLookup = Callable[[str], Reviewer | None]


def lookup_of(authenticator: Any) -> TokenLookup | None:
    """The inbox's token lookup on an auth.Authenticator (a token or, with --jwt-jwks, a
    JWT); None in the development mode."""
    if authenticator is None or authenticator.development:
        return None
    from ..auth import AuthFailed

    def lookup(token: str) -> Reviewer | None:
        try:
            return Reviewer.of(authenticator.bearer(f"Bearer {token}"))
        except AuthFailed:
            return None

    return lookup
