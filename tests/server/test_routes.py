"""The method table: every proctor.v1 method routed, nothing registered per method."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc

from proctor.server.audit.log import NullAudit
from proctor.server.health import HealthState
from proctor.server.main import register_services
from proctor.server.metrics import Metrics
from proctor.server.reload import PolicyHolder
from proctor.server.routes import MethodTable
from proctor.server.settings import Settings
from proctor.v1 import (
    admin_pb2,
    approvals_pb2,
    audit_pb2,
    budgets_pb2,
    decisions_pb2,
    probe_pb2,
)

from .conftest import SEED_POLICY


class _Server:
    """Records what a grpc.aio server would be asked to register."""

    def __init__(self) -> None:
        self.generic: list[Any] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


def _details(method: str) -> Any:
    return SimpleNamespace(method=method, invocation_metadata=())


def test_every_proto_method_is_routed_and_nothing_is_registered_per_method() -> None:
    async def build() -> tuple[MethodTable, tuple[str, ...]]:
        table = MethodTable()
        settings = Settings(policy=str(SEED_POLICY))
        names = register_services(
            table, settings=settings, holder=PolicyHolder.load(str(SEED_POLICY)),
            audit=NullAudit(), metrics=Metrics(), health=HealthState(), on_reload=None,
        )
        return table, names

    table, names = asyncio.run(build())
    server = _Server()
    server.add_generic_rpc_handlers((table,))
    assert server.registered == []  # the point: one pending accept in grpc.aio, not one per method
    expected = []
    for module in (decisions_pb2, budgets_pb2, approvals_pb2, audit_pb2, admin_pb2, probe_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name in names
            expected += [f"/{service.full_name}/{m.name}" for m in service.methods]
    expected += ["/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"]
    for method in expected:
        handler = table.service(_details(method))
        assert isinstance(handler, grpc.RpcMethodHandler), method
        # Every method parses its own bytes (server/parsing.py), so a request protobuf
        # refuses answers INVALID_ARGUMENT, never grpc's UNKNOWN.
        assert handler.request_deserializer is None, method
    for service in ("grpc.reflection.v1alpha.ServerReflection",
                    "grpc.reflection.v1.ServerReflection"):
        assert table.service(_details(f"/{service}/ServerReflectionInfo")) is not None
    assert table.service(_details("/proctor.v1.Decisions/Nope")) is None
    assert table.service(_details("/nope.Service/Evaluate")) is None
    # Evaluate is served on raw bytes (server/wire.py decodes it); the batch answers messages.
    evaluate = table.service(_details("/proctor.v1.Decisions/Evaluate"))
    assert evaluate.response_serializer is None
    batch = table.service(_details("/proctor.v1.Decisions/EvaluateBatch"))
    assert batch.response_serializer == decisions_pb2.EvaluateBatchResponse.SerializeToString


def test_only_a_registered_method_can_be_replaced() -> None:
    table = MethodTable()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    try:
        table.replace("/x.S/M", handler)
    except KeyError as e:
        assert "/x.S/M" in str(e)
    else:
        raise AssertionError("replaced a method that was never registered")
    table.add_registered_method_handlers("x.S", {"M": handler})
    other = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    table.replace("/x.S/M", other)
    assert table.service(_details("/x.S/M")) is other


def test_a_service_added_twice_is_refused() -> None:
    table = MethodTable()
    table.add_registered_method_handlers("x.S", {})
    try:
        table.add_registered_method_handlers("x.S", {})
    except ValueError as e:
        assert "x.S" in str(e)
    else:
        raise AssertionError("added twice without an error")
