"""The reviewer inbox (DESIGN section 15): approvals in a browser, run timelines, a JSON API.

| module | what |
|---|---|
| access.py | Reviewer (the principal), the development mode, who sees what |
| context.py | Inbox (what handlers read), authentication, cookies, CSRF, origin checks |
| actions.py | list, get and resolve approvals as one principal; the policy's state |
| views.py | approvals as JSON-ready data |
| timeline.py | a run's decisions and one decision's envelope, read back from the audit |
| live.py | server-sent events for the pending page |
| api.py | the JSON API under /api/v1/ |
| pages.py, templates/, static/ | the server-rendered pages |
| app.py | the Starlette application |
| server.py | uvicorn inside `proctor serve` |

`start_inbox(settings, service, holder, authenticator)` builds it all and
starts serving on `--http-listen`.
"""

from __future__ import annotations

from typing import Any

from .access import Reviewer, TokenLookup, lookup_of
from .app import build_app
from .context import Inbox
from .live import LiveFeed
from .server import InboxServer
from .timeline import AuditSource


def make_inbox(service: Any, holder: Any, audit: AuditSource, lookup: TokenLookup | None,
               *, secure_cookies: bool = False, poll_seconds: float = 2.0) -> Inbox:
    """An Inbox on `service` (ApprovalsService) whose live feed hears the service's steps."""

    async def pending_ids() -> frozenset[str]:
        items = await service.list("pending", "", "", 1000)
        return frozenset(a.approval_id for a in items)

    live = LiveFeed(pending_ids, poll_seconds)
    service.feed.subscribe(live.on_step)
    return Inbox(service=service, holder=holder, audit=audit, lookup=lookup, live=live,
                 secure_cookies=secure_cookies)


async def start_inbox(settings: Any, service: Any, holder: Any,
                      authenticator: Any = None) -> InboxServer:
    """Serve the inbox on settings.http_listen, its reviewers authenticated by
    `authenticator` (auth.Authenticator; None: the development mode); OSError when it
    cannot bind."""
    from ..settings import split_host_port

    host, port = split_host_port(settings.http_listen, "--http-listen")
    inbox = make_inbox(service, holder, AuditSource.from_settings(settings),
                       lookup_of(authenticator),
                       secure_cookies=settings.tls)
    server = InboxServer(build_app(inbox), inbox, host, port,
                         reuse_port=settings.workers > 1,
                         tls_cert=settings.tls_cert, tls_key=settings.tls_key)
    await server.start()
    return server


__all__ = ["AuditSource", "Inbox", "InboxServer", "Reviewer", "TokenLookup", "build_app",
           "lookup_of", "make_inbox", "start_inbox"]
