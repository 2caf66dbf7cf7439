"""The server-rendered pages: pending (live), one approval, resolved, a run, a decision,
the policy, and the login form.

Every page is rendered by Jinja2 with autoescaping on: labels, reasons, topics
and agent names come from agents and are shown as text, never as markup. Every
form carries the CSRF value (context.py); the approve/deny form has no
reviewer field, since the reviewer is whoever is logged in.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from ..approvals.store import ApprovalError, ApprovalNotFound, StoreUnavailable
from . import actions
from .access import Reviewer
from .context import (
    CSRF_FIELD,
    SESSION_COOKIE,
    csrf_ok,
    csrf_token,
    ensure_csrf_cookie,
    inbox_of,
    same_origin,
)
from .timeline import decision_envelope, run_timeline
from .views import approval_data, duration

SESSION_SECONDS = 12 * 3600
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
TEMPLATES.globals["duration"] = duration


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    inbox = inbox_of(request)
    ctx.setdefault("who", getattr(request.state, "who", None))
    body = TEMPLATES.get_template(name).render(
        development=inbox.development, csrf=csrf_token(request), **ctx)
    response = HTMLResponse(body, status_code=status)
    ensure_csrf_cookie(request, response)
    return response


def problem(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    return render(request, "error.html", status, title=title, message=message)


def _local(path: str) -> str:
    """A redirect target inside this site (never //elsewhere or a full URL)."""
    return path if path.startswith("/") and not path.startswith("//") else "/approvals"


def _caller(request: Request) -> Reviewer | Response:
    who = inbox_of(request).principal(request)
    if who is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), 303)
    request.state.who = who
    if not who.may_use_inbox:
        return problem(request, 403, "Not a reviewer",
                       f"Principal {who.id} has neither the reviewer nor the admin role.")
    return who


def _store_problem(request: Request, e: ApprovalError) -> HTMLResponse:
    if isinstance(e, ApprovalNotFound):
        return problem(request, 404, "Not found", e.message)
    status = 503 if isinstance(e, StoreUnavailable) else 400
    return problem(request, status, "Cannot answer", e.message)


async def home(request: Request) -> Response:
    return RedirectResponse("/approvals", 303)


async def pending(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    try:
        items = await actions.visible_approvals(inbox_of(request), who, "pending")
    except ApprovalError as e:
        return _store_problem(request, e)
    return render(request, "pending.html", approvals=[approval_data(a) for a in items])


async def pending_fragment(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    try:
        items = await actions.visible_approvals(inbox_of(request), who, "pending")
    except ApprovalError as e:
        return _store_problem(request, e)
    html = TEMPLATES.get_template("_pending_rows.html").render(
        approvals=[approval_data(a) for a in items])
    return HTMLResponse(html)


async def events(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    return StreamingResponse(inbox_of(request).live.stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def resolved_page(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    try:
        items = await actions.visible_approvals(inbox_of(request), who, "resolved")
    except ApprovalError as e:
        return _store_problem(request, e)
    return render(request, "resolved.html", approvals=[approval_data(a) for a in items])


async def approval_page(request: Request, message: str = "", kind: str = "ok",
                        status: int = 200) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    try:
        a = await actions.visible_approval(inbox_of(request), who,
                                           request.path_params["approval_id"])
    except ApprovalError as e:
        return _store_problem(request, e)
    return render(request, "approval.html", status, a=approval_data(a), message=message,
                  message_kind=kind)


async def resolve_form(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    form = await request.form()
    if not same_origin(request) or not csrf_ok(request, str(form.get(CSRF_FIELD, ""))):
        return problem(request, 403, "Refused", "The form's CSRF token is missing or stale, "
                       "or it came from another site: reload the page and try again.")
    decision = str(form.get("decision", ""))
    if decision not in ("approve", "deny"):
        return await approval_page(request, "Choose approve or deny.", "error", 400)
    approval_id = request.path_params["approval_id"]
    try:
        await actions.resolve(inbox_of(request), who, approval_id, decision == "approve",
                              str(form.get("reason", "")))
    except actions.Forbidden as e:
        return await approval_page(request, str(e), "error", 403)
    except ApprovalError as e:
        return await approval_page(request, e.message, "error",
                                   404 if isinstance(e, ApprovalNotFound) else 409)
    return RedirectResponse(f"/approvals/{urllib.parse.quote(approval_id)}", 303)


async def run_page(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    run_id = request.path_params["run_id"]
    try:
        items = await asyncio.to_thread(run_timeline, inbox_of(request).audit, run_id,
                                        who.sees_tenant)
    except (OSError, ValueError) as e:
        return problem(request, 503, "Cannot read the audit", str(e))
    return render(request, "run.html", run_id=run_id, decisions=items)


async def decision_page(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    decision_id = request.path_params["decision_id"]
    try:
        env = await asyncio.to_thread(decision_envelope, inbox_of(request).audit, decision_id,
                                      who.sees_tenant)
    except (OSError, ValueError) as e:
        return problem(request, 503, "Cannot read the audit", str(e))
    if env is None:
        return problem(request, 404, "Not found", f"No decision {decision_id} in the audit.")
    return render(request, "decision.html", e=env)


async def policy_page(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    return render(request, "policy.html", p=actions.policy_data(inbox_of(request).holder))


async def login(request: Request) -> Response:
    inbox = inbox_of(request)
    if inbox.development:
        return RedirectResponse("/approvals", 303)
    if request.method == "GET":
        return render(request, "login.html", who=None, message="",
                      next=_local(request.query_params.get("next", "/approvals")))
    form = await request.form()
    target = _local(str(form.get("next", "/approvals")))
    if not same_origin(request) or not csrf_ok(request, str(form.get(CSRF_FIELD, ""))):
        return render(request, "login.html", 403, who=None, next=target,
                      message="The form was stale or came from another site: try again.")
    token = str(form.get("token", "")).strip()
    who = inbox.authenticate(token)
    if who is None:
        return render(request, "login.html", 401, who=None, next=target,
                      message="That token is not valid.")
    if not who.may_use_inbox:
        return render(request, "login.html", 403, who=None, next=target,
                      message=f"Principal {who.id} has neither the reviewer nor the admin role.")
    response = RedirectResponse(target, 303)
    inbox.set_cookie(response, SESSION_COOKIE, token, SESSION_SECONDS)
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    if not same_origin(request) or not csrf_ok(request, str(form.get(CSRF_FIELD, ""))):
        return problem(request, 403, "Refused", "Stale form: reload the page and try again.")
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def routes() -> list[Route]:
    return [
        Route("/", home),
        Route("/approvals", pending),
        Route("/approvals/resolved", resolved_page),
        Route("/approvals/{approval_id}", approval_page),
        Route("/approvals/{approval_id}/resolve", resolve_form, methods=["POST"]),
        Route("/fragments/pending", pending_fragment),
        Route("/events", events),
        Route("/runs/{run_id}", run_page),
        Route("/decisions/{decision_id}", decision_page),
        Route("/policy", policy_page),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
