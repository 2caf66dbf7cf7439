"""The Admin service: inspect and reload the serving policy."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from proctor.v1 import admin_pb2, admin_pb2_grpc

from .decisions import WORKER_METADATA_KEY

MAX_TEXT_CHARS = 768 * 1024


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class AdminService(admin_pb2_grpc.AdminServicer):
    """GetPolicy and ReloadPolicy over the PolicyHolder.

    `on_reload` is called after every ReloadPolicy (successful or not); with
    several workers it asks the supervisor to fan the reload out to the others.
    """

    def __init__(self, holder: Any, on_reload: Callable[[], None] | None = None) -> None:
        self.holder = holder
        self.on_reload = on_reload
        self._worker = ((WORKER_METADATA_KEY, str(os.getpid())),)

    async def GetPolicy(
        self, request: admin_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetPolicyResponse:
        context.set_trailing_metadata(self._worker)
        holder = self.holder
        policy = holder.current
        return admin_pb2.GetPolicyResponse(
            policy_version=policy.policy_version,
            source=policy.source,
            rule_count=policy.rule_count,
            budget_count=len(policy.budgets),
            combining=policy.combining,
            loaded_at=_timestamp(holder.loaded_at),
            last_reload_error=holder.last_reload_error,
            last_reload_at=_timestamp(holder.last_reload_at),
            # A policy larger than the message limit is not echoed back (source names the file).
            text=policy.text if len(policy.text) <= MAX_TEXT_CHARS else "",
        )

    async def ReloadPolicy(
        self, request: admin_pb2.ReloadPolicyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ReloadPolicyResponse:
        context.set_trailing_metadata(self._worker)
        result = await self.holder.reload("rpc")
        if self.on_reload is not None:
            self.on_reload()
        if not result.ok:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"reload failed, policy {result.policy_version} keeps serving: {result.error}",
            )
        return admin_pb2.ReloadPolicyResponse(
            policy_version=result.policy_version, changed=result.changed
        )
