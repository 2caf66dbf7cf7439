"""The JSON API under /api/v1/: the inbox's data for scripts and other tools.

    GET  /api/v1/approvals?state=pending|resolved|all[&tenant=T&limit=N]
    GET  /api/v1/approvals/{id}
    POST /api/v1/approvals/{id}/resolve   {"approve": bool, "reason": str}
    GET  /api/v1/runs/{run_id}
    GET  /api/v1/decisions/{decision_id}
    GET  /api/v1/policy

Callers authenticate with `Authorization: Bearer <token>` (or the inbox's
session cookie). Errors are JSON, `{"error": {"code": ..., "message": ...}}`,
with the gRPC code's name and the matching HTTP status: INVALID_ARGUMENT 400,
UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
FAILED_PRECONDITION 409 (resolving twice), UNAVAILABLE 503. A POST must be
`application/json` (a cross-site page cannot send that without CORS, which
this API never grants) and must not come from another origin.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..approvals.store import (
    MAX_LIST_LIMIT,
    ApprovalError,
    ApprovalNotFound,
    FailedPrecondition,
    InvalidArgument,
    StoreUnavailable,
)
from . import actions
from .access import Reviewer
from .context import inbox_of, same_origin
from .timeline import decision_envelope, run_timeline
from .views import approval_data

STATUS = {
    "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404, "FAILED_PRECONDITION": 409, "UNSUPPORTED_MEDIA_TYPE": 415,
    "UNAVAILABLE": 503,
}
_ERRORS: tuple[tuple[type[ApprovalError], str], ...] = (
    (InvalidArgument, "INVALID_ARGUMENT"),
    (ApprovalNotFound, "NOT_FOUND"),
    (FailedPrecondition, "FAILED_PRECONDITION"),
    (StoreUnavailable, "UNAVAILABLE"),
)


def error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}},
                        status_code=STATUS.get(code, 500))


def approval_error(e: ApprovalError) -> JSONResponse:
    code = next((c for t, c in _ERRORS if isinstance(e, t)), "INVALID_ARGUMENT")
    return error(code, e.message)


def _caller(request: Request) -> Reviewer | JSONResponse:
    who = inbox_of(request).principal(request)
    if who is None:
        return error("UNAUTHENTICATED", "no valid credential: send Authorization: Bearer "
                     "<token>, or log in at /login")
    if not who.may_use_inbox:
        return error("PERMISSION_DENIED", f"principal {who.id} has neither the reviewer nor "
                     "the admin role")
    return who


async def list_approvals(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    state = request.query_params.get("state", "pending")
    tenant = request.query_params.get("tenant", "")
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        return error("INVALID_ARGUMENT", "limit: must be a whole number")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        return error("INVALID_ARGUMENT", f"limit: must be 1..{MAX_LIST_LIMIT}")
    try:
        items = await actions.visible_approvals(inbox_of(request), who, state, tenant, limit)
    except ApprovalError as e:
        return approval_error(e)
    return JSONResponse({"state": state, "approvals": [approval_data(a) for a in items]})


async def get_approval(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    try:
        a = await actions.visible_approval(inbox_of(request), who,
                                           request.path_params["approval_id"])
    except ApprovalError as e:
        return approval_error(e)
    return JSONResponse(approval_data(a))


async def resolve_approval(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    if not same_origin(request):
        return error("PERMISSION_DENIED", "cross-site request refused")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error("UNSUPPORTED_MEDIA_TYPE", "send the body as application/json")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return error("INVALID_ARGUMENT", "the body is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("approve"), bool):
        return error("INVALID_ARGUMENT", 'approve: give true or false, e.g. '
                     '{"approve": false, "reason": "..."}')
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        return error("INVALID_ARGUMENT", "reason: must be a string")
    try:
        a = await actions.resolve(inbox_of(request), who, request.path_params["approval_id"],
                                  body["approve"], reason)
    except actions.Forbidden as e:
        return error("PERMISSION_DENIED", str(e))
    except ApprovalError as e:
        return approval_error(e)
    return JSONResponse(approval_data(a))


async def get_run(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    inbox = inbox_of(request)
    run_id = request.path_params["run_id"]
    try:
        items = await asyncio.to_thread(run_timeline, inbox.audit, run_id, who.sees_tenant)
    except (OSError, ValueError) as e:
        return error("UNAVAILABLE", f"cannot read the audit: {e}")
    return JSONResponse({"run_id": run_id, "decisions": items})


async def get_decision(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    inbox = inbox_of(request)
    decision_id = request.path_params["decision_id"]
    try:
        env = await asyncio.to_thread(decision_envelope, inbox.audit, decision_id,
                                      who.sees_tenant)
    except (OSError, ValueError) as e:
        return error("UNAVAILABLE", f"cannot read the audit: {e}")
    if env is None:
        return error("NOT_FOUND", f"no decision {decision_id} in the audit")
    return JSONResponse(env)


async def get_policy(request: Request) -> Response:
    who = _caller(request)
    if isinstance(who, Response):
        return who
    return JSONResponse(actions.policy_data(inbox_of(request).holder))


def routes() -> list[Route]:
    return [
        Route("/api/v1/approvals", list_approvals),
        Route("/api/v1/approvals/{approval_id}", get_approval),
        Route("/api/v1/approvals/{approval_id}/resolve", resolve_approval, methods=["POST"]),
        Route("/api/v1/runs/{run_id}", get_run),
        Route("/api/v1/decisions/{decision_id}", get_decision),
        Route("/api/v1/policy", get_policy),
    ]


def not_found(_: Request, __: Any) -> Response:
    return error("NOT_FOUND", "no such API path")
