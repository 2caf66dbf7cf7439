"""The inbox's ASGI application: pages, the JSON API, events and static files.

`build_app(inbox)` returns a Starlette app serving `inbox` (context.Inbox).
Every response carries a strict Content-Security-Policy (scripts and styles
from this origin only, no framing), so even a label that slipped past the
escaping could not run a script; static files are served by the process
itself (no CDN: deployments may have no internet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import api, pages
from .context import Inbox

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
     b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _http_error(request: Request, exc: Any) -> Response:
    status = getattr(exc, "status_code", 500)
    if request.url.path.startswith("/api/"):
        code = {404: "NOT_FOUND", 405: "INVALID_ARGUMENT"}.get(status, "INTERNAL")
        return api.error(code, str(getattr(exc, "detail", "")) or "no such API path")
    if status == 404:
        return pages.problem(request, 404, "Not found", "No such page.")
    return PlainTextResponse(str(getattr(exc, "detail", "")), status_code=status)


def build_app(inbox: Inbox) -> Starlette:
    static = StaticFiles(directory=Path(__file__).parent / "static")
    app = Starlette(
        routes=[*api.routes(), *pages.routes(), Mount("/static", static, name="static")],
        exception_handlers={HTTPException: _http_error},
    )
    app.state.inbox = inbox
    app.add_middleware(SecurityHeaders)
    return app
