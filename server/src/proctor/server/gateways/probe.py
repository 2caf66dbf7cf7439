"""Probe.ProbeTopics: which topics could this caller never be allowed (engine/probe.py)?

Nothing is decided, so nothing is recorded: no audit event, no approval, no
budget. The answer follows the serving policy (a reload changes it).
"""

from __future__ import annotations

import grpc

from proctor import engine
from proctor.engine.probe import never_allowed
from proctor.v1 import probe_pb2, probe_pb2_grpc

from .. import auth

MAX_PROBE_TOPICS = 1000


class ProbeService(probe_pb2_grpc.ProbeServicer):
    """ProbeTopics on the holder's serving policy."""

    def __init__(self, holder: object) -> None:
        self.holder = holder

    async def ProbeTopics(
        self,
        request: probe_pb2.ProbeTopicsRequest,
        context: grpc.aio.ServicerContext[probe_pb2.ProbeTopicsRequest,
                                          probe_pb2.ProbeTopicsResponse],
    ) -> probe_pb2.ProbeTopicsResponse:
        if len(request.topics) > MAX_PROBE_TOPICS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"topics: at most {MAX_PROBE_TOPICS} per call, got {len(request.topics)}",
            )
        path = tuple(request.delegation_path)
        try:  # the caller's tenants and agents only
            tenant = auth.authorize(auth.caller(), request.tenant, path)
        except auth.Denied as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)
        policy = self.holder.current  # type: ignore[attr-defined]
        out = probe_pb2.ProbeTopicsResponse(policy_version=policy.policy_version)
        for topic in request.topics:
            slot = out.results.add(topic=topic)
            try:
                req = engine.Request(topic=topic, delegation_path=path, tenant=tenant,
                                     run_id=request.run_id)
            except engine.RequestError as e:
                if e.field != "topic":
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                slot.error = str(e)
                continue
            deny = never_allowed(policy, req)
            if deny is not None:
                slot.never_allowed = True
                slot.rule_id = deny.rule_id
                slot.reason = deny.reason
        if not request.topics:
            # The path and tenant are still checked, so a bad configuration shows at once.
            try:
                engine.Request(topic="probe", delegation_path=path, tenant=tenant,
                               run_id=request.run_id)
            except engine.RequestError as e:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return out
