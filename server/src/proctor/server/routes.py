"""Every method Proctor serves, in one table handed to grpc.aio as a generic handler.

Why not the generated `add_*Servicer_to_server` on the server itself: they also
register each method with the core ("registered methods"), and grpc.aio's
accept loop keeps one pending accept per registered method, waiting on all of
them (`asyncio.wait`) for every call it takes. With Proctor's ~17 methods that
is ~17 callbacks added and removed per call, whatever the call, and it grows
with the calls queued. As generic handlers every call comes through a single
pending accept and one dict lookup here, as a bare echo service's would.

The generated functions still build the handlers (deserializers, serializers,
streaming kinds): they run against this table instead of the server. Each
handler is kept behind `parsing.guard`, which parses the request itself so that
bytes protobuf refuses answer INVALID_ARGUMENT (grpc's own would be UNKNOWN).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from .parsing import guard


class MethodTable(grpc.GenericRpcHandler):
    """Collects method handlers from generated add_*_to_server calls; routes by full name."""

    def __init__(self) -> None:
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        # Handlers added only as generic ones (no per-method table), asked in order.
        self._fallbacks: list[grpc.GenericRpcHandler] = []
        self._services: set[str] = set()

    # -- the part of the grpc.Server surface the generated code calls ----------------------

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        if service in self._services:
            raise ValueError(f"service {service} added twice")
        self._services.add(service)
        for name, handler in handlers.items():
            method = f"/{service}/{name}"
            self._methods[method] = guard(method, handler)

    def replace(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> None:
        """Serve an already registered method with another handler (e.g. one on raw bytes)."""
        if method not in self._methods:
            raise KeyError(f"{method} is not registered")
        self._methods[method] = guard(method, handler)

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        # The generated code adds a generic handler for the same methods it registers;
        # those are kept only as a fallback, so a handler added without a table still works.
        self._fallbacks.extend(handlers)

    # -- grpc.GenericRpcHandler ------------------------------------------------------------

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._methods.get(handler_call_details.method)
        if handler is not None:
            return handler
        for fallback in self._fallbacks:
            handler = fallback.service(handler_call_details)
            if handler is not None:
                return handler
        return None

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(sorted(self._methods))
