"""Audit.IngestDecisions: decisions clients made locally, into the server's own chain.

A client evaluating in process (proctor.client.local) ships every decision here in
batches. Each decision becomes an ordinary decision event (the fields Evaluate
records) plus `"source": "local"` and `decided_at` (the client's clock), recorded
through the audit like any other, so verify, tail, show, replay and StreamDecisions
see it, chained by this process's writer. A batch is acknowledged once its events
are stored (flush), so a client may drop what was acknowledged from its spool.

Replays: a client that did not see an ack sends the batch again. A decision_id this
process already recorded is counted as a duplicate and not recorded twice (the
last REMEMBERED ids are kept in memory; a replay after this process restarted is
recorded again only if the restart lost the ack, i.e. the process died mid-batch).

A malformed batch or item fails the stream with INVALID_ARGUMENT naming the batch
and the item; nothing of that batch is recorded.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from proctor import engine
from proctor.v1 import audit_pb2, decisions_pb2

from .. import auth
from ..streams import OpenStreams
from ..wire import to_engine_request
from .event import format_time
from .log import AuditLog

METHOD = "/proctor.v1.Audit/IngestDecisions"
REMEMBERED = 200_000
MAX_BATCH = 1000
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 4096
_OUTCOMES = {decisions_pb2.DECISION_ALLOW: "allow", decisions_pb2.DECISION_DENY: "deny"}


class IngestError(ValueError):
    """One item is not a decision this server will record; the message names the field."""


def local_event(d: audit_pb2.LocalDecision) -> dict[str, Any]:
    """The audit event of one local decision; raises IngestError or engine.RequestError."""
    req = to_engine_request(d.request)
    r = d.response
    outcome = _OUTCOMES.get(r.decision)
    if outcome is None:
        raise IngestError("response.decision: allow or deny (require_approval is the "
                          "server's to decide)")
    if not 0 < len(r.decision_id) <= MAX_ID_CHARS:
        raise IngestError(f"response.decision_id: 1 to {MAX_ID_CHARS} characters")
    for name in ("rule_id", "reason", "policy_version"):
        if len(getattr(r, name)) > MAX_TEXT_CHARS:
            raise IngestError(f"response.{name}: at most {MAX_TEXT_CHARS} characters")
    return {
        "request_id": req.request_id,
        "run_id": req.run_id,
        "tenant": req.tenant,
        "delegation_path": req.delegation_path,
        "topic": req.topic,
        "risk_tags": req.risk_tags,
        "labels": req.labels,
        "derived_tags": tuple(r.derived_tags),
        "outcome": outcome,
        "rule_id": r.rule_id,
        "reason": r.reason,
        "policy_version": r.policy_version,
        "decision_id": r.decision_id,
        "approval_id": "",
        "latency_us": max(0, d.latency_us),
        "source": "local",
        "decided_at": format_time(d.decided_at.ToNanoseconds() / 1e9),
    }


class DecisionIngest:
    """IngestDecisions over the process's audit (anything with `record` and `flush`)."""

    def __init__(self, audit: AuditLog, streams: OpenStreams, remembered: int = REMEMBERED) -> None:
        self.audit = audit
        self.streams = streams
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._remembered = remembered

    def handler(self) -> grpc.RpcMethodHandler[bytes, bytes]:
        """On raw bytes: a batch that does not decode is answered INVALID_ARGUMENT here."""
        return grpc.stream_stream_rpc_method_handler(self.IngestDecisions)

    async def IngestDecisions(  # noqa: N802 - gRPC method name
        self, batches: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        streams = self.streams
        await streams.admit(context, "IngestDecisions")
        try:
            while (data := await streams.next(batches)) is not None:
                batch, events = await self._parse(data, context)
                recorded = duplicates = 0
                for event in events:
                    if event["decision_id"] in self._seen:
                        duplicates += 1
                        continue
                    await self.audit.record("decision", event)
                    self._remember(event["decision_id"])
                    recorded += 1
                flush = getattr(self.audit, "flush", None)
                if flush is not None and recorded:
                    await flush()
                yield audit_pb2.IngestAck(
                    batch_seq=batch.batch_seq, recorded=recorded, duplicates=duplicates,
                ).SerializeToString()
        finally:
            streams.release()

    async def _parse(
        self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> tuple[audit_pb2.IngestBatch, list[dict[str, Any]]]:
        try:
            batch = audit_pb2.IngestBatch.FromString(data)
        except DecodeError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"batch: not an IngestBatch ({e})")
        if len(batch.decisions) > MAX_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch {batch.batch_seq}: decisions: at most {MAX_BATCH} per batch, "
                f"got {len(batch.decisions)}")
        events = []
        principal = auth.caller()
        for i, d in enumerate(batch.decisions):
            try:
                event = local_event(d)
            except (IngestError, engine.RequestError) as e:
                where = f"request.{e}" if isinstance(e, engine.RequestError) else str(e)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"batch {batch.batch_seq} item {i}: {where}")
            try:  # a client records decisions of its own tenants and agents only
                event["tenant"] = auth.authorize(principal, event["tenant"],
                                                 event["delegation_path"])
            except auth.Denied as e:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"batch {batch.batch_seq} item {i}: {e.message}")
            event["caller"] = auth.audit_caller()  # the client that shipped it
            events.append(event)
        return batch, events

    def _remember(self, decision_id: str) -> None:
        seen = self._seen
        seen[decision_id] = None
        if len(seen) > self._remembered:
            seen.popitem(last=False)
