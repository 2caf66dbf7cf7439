"""Audit.StreamDecisions: the whole audit (every writer's segments, or the stream) over gRPC.

Replays from the request's cursor on the stream's own reader, then, with
`follow`, tails new events through the process's one shared tail (tail.py: files:
new lines and new segments or writers; Redis: XRANGE after the last id), which
reads and parses each event once for every stream. Every event carries the
cursor to resume after it. Reads run in a worker thread so the event loop never
waits on disk or Redis, a few dozen events at a time; every send and backlog read
takes the process's one StreamDecisions turn, so audit streams, which may lag,
never hold decisions up by more than about one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Any

import grpc
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from proctor.v1 import audit_pb2, audit_pb2_grpc

from .. import auth
from ..settings import DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL
from ..streams import CallerStreams, OpenStreams
from .event import canonical, parse_time, strip_hashes
from .reader import CursorError, DirReader, Item, StreamReader, open_reader
from .tail import READ_BATCH, RING_EVENTS, AuditTail, Entry, SendTurn

log = logging.getLogger("proctor.audit")

KIND_TO_PROTO = {
    "decision": audit_pb2.AUDIT_KIND_DECISION,
    "budget": audit_pb2.AUDIT_KIND_BUDGET,
    "approval": audit_pb2.AUDIT_KIND_APPROVAL,
    "policy_reload": audit_pb2.AUDIT_KIND_POLICY_RELOAD,
    "gap": audit_pb2.AUDIT_KIND_GAP,
}
PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}


class EventFilter:
    """AuditFilter: tenant, decision (the outcome), topic prefix, kinds; empty means any."""

    def __init__(
        self, tenant: str = "", decision: str = "", topic_prefix: str = "",
        kinds: tuple[str, ...] = (),
    ) -> None:
        self.tenant, self.decision, self.topic_prefix = tenant, decision, topic_prefix
        self.kinds = frozenset(kinds)

    @classmethod
    def from_proto(cls, f: audit_pb2.AuditFilter) -> EventFilter:
        kinds = tuple(PROTO_TO_KIND[k] for k in f.kinds if k in PROTO_TO_KIND)
        return cls(f.tenant, f.decision, f.topic_prefix, kinds)

    def match(self, ev: dict[str, Any]) -> bool:
        if self.kinds and ev.get("kind") not in self.kinds:
            return False
        if self.tenant and ev.get("tenant") != self.tenant:
            return False
        if self.decision and ev.get("outcome") != self.decision:
            return False
        prefix = self.topic_prefix
        return not prefix or str(ev.get("topic", "")).startswith(prefix)


def _strs(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _timestamp(text: str) -> Timestamp:
    ts = Timestamp()
    try:
        # The stored form is fixed (RFC 3339 UTC, "Z"): fromisoformat parses it in C,
        # many times faster than parse_time's strptime, which is the fallback.
        t = (datetime.fromisoformat(text).timestamp() if text.endswith("Z")
             else parse_time(text))
        ts.seconds = int(t)
        ts.nanos = int(round((t - int(t)) * 1e6)) * 1000
    except ValueError:
        pass
    return ts


def to_proto(ev: dict[str, Any], cursor: str) -> audit_pb2.AuditEvent:
    ts = _timestamp(str(ev.get("time", "")))
    labels = ev.get("labels") if isinstance(ev.get("labels"), dict) else {}
    seq = ev.get("seq")
    latency = ev.get("latency_us")
    return audit_pb2.AuditEvent(
        event_id=str(ev.get("event_id", "")),
        seq=seq if isinstance(seq, int) and seq >= 0 else 0,
        time=ts,
        kind=KIND_TO_PROTO.get(str(ev.get("kind", "")), audit_pb2.AUDIT_KIND_UNSPECIFIED),
        writer=str(ev.get("writer", "")),
        request_id=str(ev.get("request_id", "")),
        run_id=str(ev.get("run_id", "")),
        tenant=str(ev.get("tenant", "")),
        delegation_path=_strs(ev.get("delegation_path")),
        topic=str(ev.get("topic", "")),
        risk_tags=_strs(ev.get("risk_tags")),
        derived_tags=_strs(ev.get("derived_tags")),
        labels={str(k): str(v) for k, v in (labels or {}).items()},
        outcome=str(ev.get("outcome", "")),
        rule_id=str(ev.get("rule_id", "")),
        reason=str(ev.get("reason", "")),
        policy_version=str(ev.get("policy_version", "")),
        decision_id=str(ev.get("decision_id", "")),
        approval_id=str(ev.get("approval_id", "")),
        latency_us=latency if isinstance(latency, int) else 0,
        source=str(ev.get("source", "")),
        prev_hash=str(ev.get("prev_hash", "")),
        hash=str(ev.get("hash", "")),
        hmac=str(ev.get("hmac", "")),
        record_json=canonical(strip_hashes(ev)).decode("utf-8"),
        cursor=cursor,
    )


class AuditService(audit_pb2_grpc.AuditServicer):
    """Serves the audit this server writes: `--audit-dir` for files, the stream for redis."""

    def __init__(
        self, audit_dir: str | None = None, redis_url: str | None = None,
        stream: str | None = None, poll_interval: float = 0.1,
        streams: OpenStreams | None = None,
        max_streams_per_principal: int = DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL,
        ring_events: int = RING_EVENTS,
        deciding: Callable[[], bool] | None = None,
    ) -> None:
        self.audit_dir, self.redis_url, self.stream = audit_dir, redis_url, stream
        self.poll_interval = poll_interval
        self.streams = streams  # counts StreamDecisions per principal when given
        self.callers = CallerStreams(
            "StreamDecisions", max_streams_per_principal, "--max-audit-streams-per-principal")
        # ring_events: how far (in events) a follower may lag the shared tail before it
        # reads on its own again.
        self.tail = AuditTail(lambda ev: to_proto(ev, ""), poll_interval, ring_events)
        # Streams yield the loop to decisions only while there are decisions to serve
        # (`deciding`, from the Decisions service's fair share); without it, always.
        self.turn = SendTurn(deciding=deciding)

    @classmethod
    def from_settings(cls, settings: Any, streams: OpenStreams | None = None,
                      deciding: Callable[[], bool] | None = None) -> AuditService:
        from . import audit_settings

        cfg = audit_settings(settings)
        limit = settings.max_audit_streams_per_principal
        if cfg["audit"] == "redis":
            return cls(redis_url=cfg["redis_url"], stream=cfg["audit_stream"], streams=streams,
                       max_streams_per_principal=limit, deciding=deciding)
        return cls(audit_dir=str(cfg["audit_dir"]), streams=streams,
                   max_streams_per_principal=limit, deciding=deciding)

    async def StreamDecisions(  # noqa: N802 - gRPC method name
        self, request: audit_pb2.StreamDecisionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[audit_pb2.AuditEvent]:
        key = await self.callers.admit(context)
        try:
            if self.streams is None:
                async for event in self._stream(request, context):
                    yield event
                return
            await self.streams.admit(context, "StreamDecisions")
            try:
                async for event in self._stream(request, context):
                    yield event
            finally:
                self.streams.release()
        finally:
            self.callers.release(key)

    async def _stream(
        self, request: audit_pb2.StreamDecisionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[audit_pb2.AuditEvent]:
        try:
            reader = open_reader(self.audit_dir, self.redis_url, self.stream, request.cursor)
        except CursorError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cursor: {exc}")
            return
        flt = EventFilter.from_proto(request.filter)
        try:  # an auditor reads its tenants' events only
            tenants = auth.readable_tenants(auth.caller(), flt)
        except auth.Denied as e:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, e.message)

        def wanted(ev: dict[str, Any]) -> bool:
            return flt.match(ev) and (tenants is None or ev.get("tenant") in tenants)

        skipped = 0
        try:
            # aclosing: a stream that ends leaves the shared tail now, not when collected
            events = self._follow(reader, request.follow)
            async with contextlib.aclosing(events):
                async for got in events:
                    item = got.item if isinstance(got, Entry) else got
                    reader.ack(item)
                    if not wanted(item.event):
                        skipped += 1
                        if skipped % 256 == 0:  # a long filtered stretch gives the loop back
                            await asyncio.sleep(0)
                        continue
                    if isinstance(got, Entry):  # the tail's, for every stream: a copy
                        msg = audit_pb2.AuditEvent()
                        msg.CopyFrom(got.message)
                        msg.cursor = reader.cursor()
                    else:
                        msg = to_proto(item.event, reader.cursor())
                    async with self.turn():
                        yield msg
        except redis.RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"audit stream unreachable: {exc}")
        finally:
            reader.close()

    async def _follow(
        self, reader: DirReader | StreamReader, keep_going: bool,
    ) -> AsyncGenerator[Item | Entry, None]:
        """The backlog on the stream's own reader; then, following, the shared tail, and
        the own reader again whenever the stream falls behind the tail's ring."""
        while True:
            try:
                async with self.turn():  # a backlog read is a turn, like a send
                    got = await asyncio.to_thread(reader.poll, READ_BATCH)
                for one in got:
                    yield one
                if len(got) >= READ_BATCH:
                    continue
                if not keep_going:
                    return
                async with contextlib.aclosing(self.tail.follow(reader)) as entries:
                    async for entry in entries:
                        yield entry
            except redis.RedisError as exc:
                if not keep_going:
                    raise
                log.warning("audit stream: redis unavailable (%s); retrying", exc)
                await asyncio.sleep(max(self.poll_interval, 0.5))


async def follow(
    reader: DirReader | StreamReader, keep_going: bool, poll_interval: float = 0.1,
    batch: int = 500,
) -> AsyncIterator[Item]:
    """Items from the reader; with keep_going, wait for more instead of ending."""
    while True:
        try:
            items = await asyncio.to_thread(reader.poll, batch)
        except redis.RedisError as exc:
            if not keep_going:
                raise
            log.warning("audit stream: redis unavailable (%s); retrying", exc)
            await asyncio.sleep(max(poll_interval, 0.5))
            continue
        for item in items:
            yield item
        if not items:
            if not keep_going:
                return
            await asyncio.sleep(poll_interval)
