"""What every inbox handler reads: the stores and services of this process, and who asks.

`Inbox` holds the approvals service, the policy holder, where the audit is
read back, the token lookup (None: the development mode) and the live feed.
`principal(request)` authenticates a request: an `Authorization: Bearer`
header (API clients), else the session cookie the login form set.
`check_origin` and the CSRF helpers protect state-changing requests: every
form carries the value of the HttpOnly, SameSite=Strict `proctor_csrf`
cookie (double submit), and a request whose Origin names another site is
refused whatever it carries.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .access import DEVELOPMENT, Reviewer, TokenLookup
from .live import LiveFeed
from .timeline import AuditSource

SESSION_COOKIE = "proctor_session"
CSRF_COOKIE = "proctor_csrf"
CSRF_FIELD = "csrf"
MAX_TOKEN_CHARS = 8192


@dataclass
class Inbox:
    service: Any  # approvals.service.ApprovalsService
    holder: Any  # reload.PolicyHolder
    audit: AuditSource
    lookup: TokenLookup | None
    live: LiveFeed
    secure_cookies: bool = False

    @property
    def development(self) -> bool:
        return self.lookup is None

    def authenticate(self, token: str) -> Reviewer | None:
        if self.lookup is None:
            return DEVELOPMENT
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        return self.lookup(token)

    def principal(self, request: Request) -> Reviewer | None:
        """The caller: DEVELOPMENT without a lookup; None when it did not authenticate."""
        if self.lookup is None:
            return DEVELOPMENT
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if header and scheme.lower() == "bearer":
            return self.authenticate(token.strip())
        return self.authenticate(request.cookies.get(SESSION_COOKIE, ""))

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.secure_cookies, path="/")


def inbox_of(request: Request) -> Inbox:
    inbox: Inbox = request.app.state.inbox
    return inbox


def csrf_token(request: Request) -> str:
    """The CSRF value for this browser (set on the response by `ensure_csrf_cookie`)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if token and len(token) <= 128:
        return token
    fresh: str = getattr(request.state, "csrf", "")
    if not fresh:
        fresh = secrets.token_urlsafe(32)
        request.state.csrf = fresh
    return fresh


def ensure_csrf_cookie(request: Request, response: Response) -> None:
    if request.cookies.get(CSRF_COOKIE) != csrf_token(request):
        inbox_of(request).set_cookie(response, CSRF_COOKIE, csrf_token(request), 86400 * 30)


def csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


def same_origin(request: Request) -> bool:
    """False when the request says it comes from another site (Origin, else Referer)."""
    origin = request.headers.get("origin") or ""
    if not origin or origin == "null":
        referer = request.headers.get("referer") or ""
        if not referer:
            return origin != "null"
        origin = "/".join(referer.split("/")[:3])
    here = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin == here
