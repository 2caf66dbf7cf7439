"""The Admin service: inspect, reload and watch the serving policy."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from proctor import engine
from proctor.v1 import admin_pb2, admin_pb2_grpc

from .decisions import WORKER_METADATA_KEY
from .seams import ServingPolicy
from .streams import OpenStreams

# The policy text an answer carries, in UTF-8 bytes: the answer must fit the 1 MiB message
# limit (settings.MAX_MESSAGE_BYTES) with room for its other fields.
MAX_TEXT_BYTES = 768 * 1024
DEFAULT_HEARTBEAT_SECONDS = 5
MAX_HEARTBEAT_SECONDS = 300


@functools.lru_cache(maxsize=4)
def text_bytes(text: str) -> int:
    """The UTF-8 size of a policy text (counted once per policy: the text is kept)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


class AdminService(admin_pb2_grpc.AdminServicer):
    """GetPolicy and ReloadPolicy over the PolicyHolder.

    `on_reload` is called after every ReloadPolicy (successful or not); with
    several workers it asks the supervisor to fan the reload out to the others.
    """

    def __init__(self, holder: ServingPolicy, on_reload: Callable[[], None] | None = None,
                 streams: OpenStreams | None = None, local_evaluation: bool = True) -> None:
        self.holder = holder
        self.on_reload = on_reload
        self._worker = ((WORKER_METADATA_KEY, str(os.getpid())),)
        self.streams = streams or OpenStreams(1)
        self.local_evaluation = local_evaluation
        # Set, and replaced by a fresh one, after every successful swap in this process
        # (each worker reloads itself: file poll, SIGHUP fan-out; see workers.py).
        self._swapped = asyncio.Event()
        holder.subscribe(self._on_swap)

    def _on_swap(self, policy: engine.CompiledPolicy) -> None:
        swapped, self._swapped = self._swapped, asyncio.Event()
        swapped.set()

    async def GetPolicy(
        self,
        request: admin_pb2.GetPolicyRequest,
        context: grpc.aio.ServicerContext[admin_pb2.GetPolicyRequest,
                                          admin_pb2.GetPolicyResponse],
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
            text=policy.text if text_bytes(policy.text) <= MAX_TEXT_BYTES else "",
        )

    async def ReloadPolicy(
        self,
        request: admin_pb2.ReloadPolicyRequest,
        context: grpc.aio.ServicerContext[admin_pb2.ReloadPolicyRequest,
                                          admin_pb2.ReloadPolicyResponse],
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

    async def WatchPolicy(
        self,
        request: admin_pb2.WatchPolicyRequest,
        context: grpc.aio.ServicerContext[admin_pb2.WatchPolicyRequest,
                                          admin_pb2.PolicySnapshot],
    ) -> AsyncIterator[admin_pb2.PolicySnapshot]:
        """The serving policy now, again after every swap that changes it, heartbeats between.

        Initial metadata names the worker process (several share a port).
        """
        if not self.local_evaluation:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "local evaluation is off on this server (--local-evaluation off): "
                "evaluate through Decisions instead")
        beat = request.heartbeat_seconds or DEFAULT_HEARTBEAT_SECONDS
        if not 1 <= beat <= MAX_HEARTBEAT_SECONDS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"heartbeat_seconds: between 1 and {MAX_HEARTBEAT_SECONDS}, got {beat}")
        streams = self.streams
        await streams.admit(context, "WatchPolicy")
        try:
            await context.send_initial_metadata(self._worker)
            sent: tuple[str, str] | None = None
            while True:
                policy = self.holder.current
                if (policy.policy_version, policy.text) != sent:
                    yield await self._snapshot(policy, context)
                    sent = (policy.policy_version, policy.text)
                else:
                    yield admin_pb2.PolicySnapshot(
                        policy_version=policy.policy_version, heartbeat=True,
                        sent_at=_timestamp(time.time()))
                swapped = self._swapped
                woke = await streams.wait(_within(swapped.wait(), beat))
                if woke is None:
                    return
        finally:
            streams.release()

    async def _snapshot(
        self,
        policy: Any,
        context: grpc.aio.ServicerContext[admin_pb2.WatchPolicyRequest,
                                          admin_pb2.PolicySnapshot],
    ) -> admin_pb2.PolicySnapshot:
        size = text_bytes(policy.text)
        if size > MAX_TEXT_BYTES:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the policy text ({size} bytes) is larger than "
                f"{MAX_TEXT_BYTES} bytes: too large to evaluate locally")
        return admin_pb2.PolicySnapshot(
            policy_version=policy.policy_version, text=policy.text, source=policy.source,
            sent_at=_timestamp(time.time()))


async def _within(awaitable: Any, seconds: float) -> bool:
    """True when `awaitable` finished within `seconds`, False when the time ran out."""
    try:
        await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        return False
    return True
