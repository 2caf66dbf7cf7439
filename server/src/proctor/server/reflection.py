"""Server reflection, so grpcurl and other tools can list and call the services.

grpcio-reflection serves `grpc.reflection.v1alpha.ServerReflection`. Tools
increasingly ask `grpc.reflection.v1.ServerReflection` first; its messages are
the same on the wire, so the same servicer answers under both names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_reflection.v1alpha import reflection
from grpc_reflection.v1alpha import reflection_pb2 as _pb

V1_SERVICE = "grpc.reflection.v1.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
SERVICE_NAMES = (V1ALPHA_SERVICE, V1_SERVICE)


def enable(server: Any, service_names: Iterable[str]) -> None:
    """Serve reflection (v1alpha and v1) for `service_names` on an aio server or MethodTable.

    Both names are added as plain generic handlers (see server/routes.py for why
    Proctor registers no per-method handlers with the core).
    """
    servicer = reflection.aio.ReflectionServicer(tuple(service_names))
    for service in SERVICE_NAMES:
        handler = grpc.method_handlers_generic_handler(
            service,
            {
                "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                    servicer.ServerReflectionInfo,
                    request_deserializer=_pb.ServerReflectionRequest.FromString,
                    response_serializer=_pb.ServerReflectionResponse.SerializeToString,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))
