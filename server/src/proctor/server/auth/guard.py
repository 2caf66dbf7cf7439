"""The one place credentials are checked: a generic handler in front of the method table.

Every call to a method outside OPEN_SERVICES (health, reflection) is
authenticated before its handler runs, and its principal must hold one of the
roles METHOD_ROLES lists for the method (a method not listed: admin only, so a
new RPC is closed until it is given its roles). The principal is then
available to the handler as `caller()`, which checks tenants and acting agents
itself (`authorize`), on the request it has decoded.

No credential, or a bad one: UNAUTHENTICATED, counted in
proctor_auth_failures_total{reason} and logged with the peer (never the
token). A principal without the role: PERMISSION_DENIED naming it.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from .. import logs
from .authenticate import Authenticator, AuthFailed
from .principal import (
    ADMIN,
    AGENT,
    ANONYMOUS_ADMIN,
    AUDITOR,
    REVIEWER,
    Denied,
    Principal,
    require_role,
)

log = logging.getLogger("proctor.auth")

OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_A, _R, _U = frozenset({AGENT}), frozenset({REVIEWER}), frozenset({AUDITOR})
METHOD_ROLES: dict[str, frozenset[str]] = {
    "/proctor.v1.Decisions/Evaluate": _A,
    "/proctor.v1.Decisions/EvaluateBatch": _A,
    "/proctor.v1.Decisions/EvaluateStream": _A,
    "/proctor.v1.Budgets/ReserveBudget": _A,
    "/proctor.v1.Budgets/CommitBudget": _A,
    "/proctor.v1.Budgets/ReleaseBudget": _A,
    "/proctor.v1.Budgets/GetBudget": _A,
    "/proctor.v1.Approvals/GetApproval": _A | _R,
    "/proctor.v1.Approvals/WaitApproval": _A,
    "/proctor.v1.Approvals/ListApprovals": _R,
    "/proctor.v1.Approvals/ResolveApproval": _R,
    "/proctor.v1.Audit/StreamDecisions": _U,
    "/proctor.v1.Audit/IngestDecisions": _A,
    "/proctor.v1.Admin/GetPolicy": frozenset({ADMIN}),
    "/proctor.v1.Admin/ReloadPolicy": frozenset({ADMIN}),
    "/proctor.v1.Admin/WatchPolicy": _A,
    "/proctor.v1.Probe/ProbeTopics": _A,
    "/envoy.service.auth.v3.Authorization/Check": _A,
}

_CALLER: ContextVar[Principal] = ContextVar("proctor_caller", default=ANONYMOUS_ADMIN)

FAILURES = Counter("proctor_auth_failures_total",
                   "calls refused UNAUTHENTICATED (no or bad credential), by reason", ["reason"])
DENIALS = Counter("proctor_auth_denied_total",
                  "calls refused PERMISSION_DENIED for a missing role", ["method"])
_registered: set[int] = set()


def caller() -> Principal:
    """The principal of the call being served (the anonymous admin in development mode)."""
    return _CALLER.get()


def acting_as(principal: Principal) -> None:
    """Make `principal` the caller for the rest of this task (another front door, such as
    the inbox, that authenticated it itself)."""
    _CALLER.set(principal)


def audit_caller() -> dict[str, str]:
    """The audit's `caller` field for the call being served: {"id", "method"}."""
    p = _CALLER.get()
    return {"id": p.id, "method": p.method}


def requester() -> str:
    """The id recorded as an approval's requester ("" in the development mode)."""
    p = _CALLER.get()
    return "" if p.unrestricted else p.id


# The caller of what no request asked for: expiries, file-triggered reloads.
SYSTEM_CALLER = {"id": "proctor", "method": "internal"}


def register(registry: CollectorRegistry) -> None:
    if registry is REGISTRY or id(registry) in _registered:
        return
    registry.register(FAILURES)
    registry.register(DENIALS)
    _registered.add(id(registry))


class Guard(grpc.GenericRpcHandler):
    """Routes like `table`, with every closed method behind authentication and its roles."""

    def __init__(self, table: grpc.GenericRpcHandler, authenticator: Authenticator) -> None:
        self._table = table
        self.authenticator = authenticator
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._last_log = 0.0

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._table.service(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or self.authenticator.development or method.startswith(OPEN_SERVICES):
            return handler
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = _wrap(handler, method, self._admit)
        return wrapped

    async def _admit(self, context: Any, method: str) -> Principal:
        """The call's principal, or abort UNAUTHENTICATED / PERMISSION_DENIED."""
        try:
            principal = self.authenticator.authenticate(
                context.invocation_metadata(), context.auth_context)
        except AuthFailed as e:
            FAILURES.labels(e.reason).inc()
            self._log_failure(context, method, e)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, e.message)
            raise AssertionError("unreachable") from None  # abort raises
        try:
            require_role(principal, METHOD_ROLES.get(method, frozenset()), method)
        except Denied as e:
            DENIALS.labels(method).inc()
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
        _CALLER.set(principal)
        return principal

    def _log_failure(self, context: Any, method: str, e: AuthFailed) -> None:
        now = time.monotonic()
        if now - self._last_log < 0.1:  # at most ten a second: a flood stays a metric
            return
        self._last_log = now
        logs.event(log, logging.WARNING, "authentication failed", peer=context.peer(),
                   method=method, reason=e.reason, error=e.message)


Admit = Callable[[Any, str], Any]


Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


def _wrap(handler: Handler, method: str, admit: Admit) -> Handler:
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await admit(context, method)
            return await inner(request, context)

        return handler._replace(unary_unary=unary_unary)  # type: ignore[attr-defined,no-any-return]
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await admit(context, method)  # streams authenticate once, at open
            return await inner_su(requests, context)

        return handler._replace(stream_unary=stream_unary)  # type: ignore[attr-defined,no-any-return]
    kind = "unary_stream" if handler.unary_stream is not None else "stream_stream"
    inner_s = getattr(handler, kind)

    async def streaming(request: Any, context: Any) -> Any:
        await admit(context, method)  # streams authenticate once, at open
        out = inner_s(request, context)
        if not inspect.isasyncgen(out):
            await out
            return
        try:
            async for item in out:
                yield item
        finally:
            await out.aclose()

    return handler._replace(**{kind: streaming})  # type: ignore[attr-defined,no-any-return]
