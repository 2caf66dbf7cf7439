"""The Decisions service: may this agent take this action?

Each call reads top to bottom: validate the request into an engine.Request,
evaluate it on the serving policy (`_decide` builds the answer and its audit
event), record the event in the audit, answer.
Bad input is INVALID_ARGUMENT with the engine's message (it names the field
and the limit); nothing else is touched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc

from proctor import engine
from proctor.v1 import decisions_pb2, decisions_pb2_grpc

from .approvals.gate import ApprovalGate
from .audit.log import AuditLog, AuditUnavailable, offer_of, room_of
from .auth import Denied, audit_caller, authorize, caller
from .fairness import FairShare
from .ids import new_generator
from .seams import DecisionMetrics, ServingPolicy
from .settings import DEFAULT_MAX_BATCH_ITEMS, DEFAULT_MAX_EXPLAIN_BYTES, DEFAULT_MAX_STREAMS
from .streams import OpenStreams
from .wire import DECISION_TO_PROTO, DecodeError, decode_evaluate, encode_response
from .wire import to_engine_request as to_engine_request

# A batch gives the event loop back after each slice of this much work (nanoseconds), so
# that a full batch holds other callers up for a slice of its work, not all of it.
BATCH_SLICE_NS = 200_000
# The slice while another caller is active (FairShare.shared): a quarter of the wait for
# each of its steps (abuse bench, full batches: p50 1.8-2.0x of quiet against 4.7-5.4x).
SHARED_SLICE_NS = 50_000
EVALUATE_METHOD = "/proctor.v1.Decisions/Evaluate"
EVALUATE_STREAM_METHOD = "/proctor.v1.Decisions/EvaluateStream"

_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
_PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
# Trailing metadata naming the process that answered (several workers share a port).
WORKER_METADATA_KEY = "proctor-worker"
# What an answer carries: the arguments of wire.encode_response, in its order.
Answer = tuple[
    decisions_pb2.Decision, str, str, str, str, str, tuple[str, ...], tuple[str, ...], int
]
Decided = tuple[Answer, dict[str, Any]]  # the answer and its audit event


class DecisionsService(decisions_pb2_grpc.DecisionsServicer):
    """Evaluate and EvaluateBatch on the holder's serving policy."""

    def __init__(self, holder: ServingPolicy, audit: AuditLog, metrics: DecisionMetrics,
                 sync_audit: bool = False, approvals: ApprovalGate | None = None,
                 name_worker: bool = False,
                 streams: OpenStreams | None = None,
                 max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
                 max_explain_bytes: int = DEFAULT_MAX_EXPLAIN_BYTES,
                 fair: FairShare | None = None) -> None:
        self.holder = holder
        # Each caller's share of the event loop while others are active (fairness.py).
        self.fair = fair
        self.max_batch_items = max_batch_items
        # The rule ids an explain answer lists, in UTF-8 bytes (a batch: all its items).
        self.max_explain_bytes = max_explain_bytes
        self.streams = streams or OpenStreams(DEFAULT_MAX_STREAMS)
        # require_approval creates an approval; a presented
        # approved id for the very same action turns it into allow once. None: no approvals.
        self.approvals = approvals
        self.audit = audit
        # Enqueue without a coroutine when that is all recording takes (AuditLog.offer).
        self._offer = offer_of(audit)
        # A batch waits for room for all its events short of the queue's last part, left
        # to single decisions (AuditWriter.room_for).
        self._room_for = room_of(audit)
        self.metrics = metrics
        # With --audit-durability sync a record waits for the disk: a batch then records
        # its events concurrently so that one group commit covers them all.
        self.sync_audit = sync_audit
        self._ids = new_generator()
        # Several workers share the port: each answer names the process that gave it. One
        # worker: Admin calls still name it, and Evaluate saves the trailer's cost (~20 µs).
        self._worker = ((WORKER_METADATA_KEY, str(os.getpid())),) if name_worker else None

    async def Evaluate(
        self, data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        """Served on raw bytes (see `raw_evaluate_handler`): server/wire.py decodes and encodes.

        The common call (no approval involved, room in the audit queue) never suspends:
        the approval gate and a waiting record() are the only awaits.
        """
        started = time.perf_counter_ns()
        if self.fair is not None:
            # Counted as activity, never held: held calls wait in gRPC's accept queue
            # anyway, ahead of the handler (docs/performance.md, abuse section).
            self.fair.seen()
        if self._worker is not None:
            context.set_trailing_metadata(self._worker)
        try:
            req, approval_id, explain = decode_evaluate(data)
        except engine.RequestError as e:
            self.metrics.invalid("Evaluate", e.field)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except DecodeError as e:
            self.metrics.invalid("Evaluate", "request")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"request: not an EvaluateRequest ({e})")
        denied = _authorize(req)
        if denied is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, denied)
        if self.audit.refusal:  # the audit cannot store it: fail closed, unanswered
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.audit.refusal)
        decided = self._decide(req, approval_id, explain, started)
        if not isinstance(decided, tuple):
            decided = await decided
        answer, event = decided
        if not self._offer("decision", event):
            try:
                await self.audit.record("decision", event)
            except AuditUnavailable as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        self.metrics.observe_evaluate((time.perf_counter_ns() - started) / 1e9)
        return encode_response(*answer)

    def raw_evaluate_handler(self) -> grpc.RpcMethodHandler[bytes, bytes]:
        """Evaluate's handler without upb (de)serializers: the servicer takes and gives bytes."""
        return grpc.unary_unary_rpc_method_handler(self.Evaluate)

    async def EvaluateStream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """One answer per request, in request order, on raw bytes like Evaluate.

        Each item is decided and recorded exactly as Evaluate would (same decoder, gate,
        audit and metrics); an item that does not decode or validate gets its
        INVALID_ARGUMENT in its slot and the stream goes on. Items are taken one after
        the other: an item waiting on the approval gate or on a sync audit write holds
        the ones behind it, which is what keeps the answers in order.
        """
        if self._worker is not None:
            context.set_trailing_metadata(self._worker)
        streams = self.streams
        await streams.admit(context, "EvaluateStream")
        try:
            while (data := await streams.next(requests)) is not None:
                started = time.perf_counter_ns()
                try:
                    req, approval_id, explain = decode_evaluate(data)
                except engine.RequestError as e:
                    self.metrics.invalid("EvaluateStream", e.field)
                    yield _error_item(str(e))
                    continue
                except DecodeError as e:
                    self.metrics.invalid("EvaluateStream", "request")
                    yield _error_item(f"request: not an EvaluateRequest ({e})")
                    continue
                denied = _authorize(req)
                if denied is not None:
                    yield _error_item(denied, _PERMISSION_DENIED)
                    continue
                if self.audit.refusal:
                    yield _error_item(self.audit.refusal, _UNAVAILABLE)
                    continue
                decided = self._decide(req, approval_id, explain, started)
                if not isinstance(decided, tuple):
                    decided = await decided
                answer, event = decided
                if not self._offer("decision", event):
                    try:
                        await self.audit.record("decision", event)
                    except AuditUnavailable as e:
                        yield _error_item(str(e), _UNAVAILABLE)
                        continue
                self.metrics.observe_evaluate((time.perf_counter_ns() - started) / 1e9)
                yield _response_item(encode_response(*answer))
        finally:
            streams.release()

    def raw_stream_handler(self) -> grpc.RpcMethodHandler[bytes, bytes]:
        """EvaluateStream's handler on bytes: the servicer decodes each item itself, so a
        malformed one is answered in its slot instead of ending the stream."""
        return grpc.stream_stream_rpc_method_handler(self.EvaluateStream)

    async def EvaluateBatch(
        self, request: decisions_pb2.EvaluateBatchRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> decisions_pb2.EvaluateBatchResponse:
        started = time.perf_counter_ns()
        items = request.requests
        if self.fair is not None and (parked := self.fair.enter(context, len(items))) is not None:
            await parked
        if self._worker is not None:
            context.set_trailing_metadata(self._worker)
        if len(items) > self.max_batch_items:
            self.metrics.invalid("EvaluateBatch", "requests")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requests: at most {self.max_batch_items} items per batch "
                f"(--max-batch-items), got {len(items)}",
            )
        if self.audit.refusal:
            await context.abort(grpc.StatusCode.UNAVAILABLE, self.audit.refusal)
        out = decisions_pb2.EvaluateBatchResponse()
        events: list[dict[str, Any]] = []
        explain_left = self.max_explain_bytes
        fair = self.fair
        slice_end = started + BATCH_SLICE_NS
        for item in items:
            item_started = time.perf_counter_ns()
            if item_started > slice_end:
                slice_end = await _between_slices(fair)
                item_started = time.perf_counter_ns()
            slot = out.results.add()
            try:
                req = to_engine_request(item)
            except engine.RequestError as e:
                self.metrics.invalid("EvaluateBatch", e.field)
                slot.error.code = _INVALID_ARGUMENT
                slot.error.message = str(e)
                continue
            denied = _authorize(req)
            if denied is not None:
                slot.error.code = _PERMISSION_DENIED
                slot.error.message = denied
                continue
            decided = self._decide(req, item.approval_id, item.explain, item_started)
            if not isinstance(decided, tuple):
                decided = await decided
            answer, event = decided
            if answer[6]:
                listed, used = cut_ids(answer[6], explain_left)
                explain_left -= used
                answer = (*answer[:6], listed, *answer[7:])
            slot.response.MergeFromString(encode_response(*answer))
            events.append(event)
        try:
            if self.sync_audit:
                # Enqueued in item order (each record enqueues before it first waits).
                await asyncio.gather(*[self.audit.record("decision", e) for e in events])
            else:
                await self._room_for(len(events))
                # Sliced like the decisions: a thousand records at once held the loop ~1 ms.
                offer = self._offer
                slice_end = time.perf_counter_ns() + SHARED_SLICE_NS
                for event in events:
                    if not offer("decision", event):
                        await self.audit.record("decision", event)
                    if time.perf_counter_ns() > slice_end:
                        slice_end = await _between_slices(fair)
        except AuditUnavailable as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        self.metrics.observe_batch((time.perf_counter_ns() - started) / 1e9, len(items))
        return out

    async def decide(
        self, req: engine.Request, approval_id: str = "", source: str = ""
    ) -> tuple[Answer, dict[str, Any]]:
        """Decide and record one validated request exactly as Evaluate does, for the other
        front doors (gateways/ext_authz.py: Envoy's Check). `source` names the door in the
        audit event ("envoy"); the answer is Evaluate's (see `Answer`). AuditUnavailable
        when the audit cannot store it (fail closed)."""
        if self.audit.refusal:
            raise AuditUnavailable(self.audit.refusal)
        answer, event = await _settled(self._decide(req, approval_id, False,
                                                    time.perf_counter_ns()))
        if source:
            event["source"] = source
        if not self._offer("decision", event):
            await self.audit.record("decision", event)
        return answer, event

    def _decide(
        self, req: engine.Request, approval_id: str, explain: bool, started: int
    ) -> Decided | Awaitable[Decided]:
        """Evaluate one validated request on the serving policy: the answer and its audit event.

        An awaitable only when the approval gate must be asked (its store may do I/O):
        the common call costs no coroutine.
        """
        decision = self.holder.current.evaluate(req, explain)
        decision_id = self._ids.new()
        approvals = self.approvals
        if approvals is not None and (
            approval_id or decision.decision == "require_approval"
        ):
            return self._gated(approvals, req, decision, approval_id, decision_id, started)
        return self._answer(req, decision, decision_id, started, decision.decision,
                            decision.reason, "", None)

    async def _gated(
        self, approvals: ApprovalGate, req: engine.Request, decision: engine.Decision,
        approval_id: str, decision_id: str, started: int,
    ) -> Decided:
        """require_approval creates an approval; a presented approved id may turn it to allow."""
        gate = await approvals.apply(req, decision, approval_id, decision_id)
        return self._answer(req, decision, decision_id, started, gate.decision,
                            gate.reason, gate.approval_id, gate.audit)

    def _answer(
        self, req: engine.Request, decision: engine.Decision, decision_id: str, started: int,
        outcome: str, reason: str, approval_id: str, extra: dict[str, Any] | None,
    ) -> Decided:
        self.metrics.decided(outcome, decision.rule_id)
        matched = decision.matched_rule_ids
        listed = cut_ids(matched, self.max_explain_bytes)[0] if matched else matched
        answer: Answer = (
            DECISION_TO_PROTO[outcome], decision.rule_id, reason, decision.policy_version,
            decision_id, approval_id, listed, decision.derived_tags, len(matched),
        )
        # Tuples and the request's own label dict go in as they are: the audit only
        # reads them (and writes tuples as JSON arrays). Approval steps add more keys.
        event = {
            "request_id": req.request_id,
            "run_id": req.run_id,
            "tenant": req.tenant,
            "delegation_path": req.delegation_path,
            "topic": req.topic,
            "risk_tags": req.risk_tags,
            "labels": req.labels,
            "derived_tags": decision.derived_tags,
            "outcome": outcome,
            "rule_id": decision.rule_id,
            "reason": reason,
            "policy_version": decision.policy_version,
            "decision_id": decision_id,
            "approval_id": approval_id,
            "latency_us": (time.perf_counter_ns() - started) // 1000,
            "caller": audit_caller(),
        }
        if extra:
            event.update(extra)
        return answer, event


def cut_ids(ids: tuple[str, ...], budget: int) -> tuple[tuple[str, ...], int]:
    """The first of `ids` whose UTF-8 bytes fit `budget` together, and those bytes."""
    used = 0
    for i, rule_id in enumerate(ids):
        size = len(rule_id.encode())
        if used + size > budget:
            return ids[:i], used
        used += size
    return ids, used


def _response_item(response: bytes) -> bytes:
    """EvaluateBatchItem bytes holding `response` (field 1, length-delimited)."""
    n = len(response)
    head = bytearray(b"\x0a")
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + response


def _error_item(message: str, code: int = _INVALID_ARGUMENT) -> bytes:
    return decisions_pb2.EvaluateBatchItem(
        error=decisions_pb2.ItemStatus(code=code, message=message)
    ).SerializeToString()


def _authorize(req: engine.Request) -> str | None:
    """May the caller ask for `req` (its tenant, its acting agent)? None when it may; the
    PERMISSION_DENIED message when not. An empty tenant becomes the caller's only one."""
    principal = caller()
    if principal.unrestricted:
        return None
    try:
        req.tenant = authorize(principal, req.tenant, req.delegation_path)
    except Denied as e:
        return e.message
    return None


async def _between_slices(fair: FairShare | None) -> int:
    """Give the loop back between two slices of a batch; when the next slice should end."""
    if fair is not None and fair.shared():
        await fair.turns.pause()
        return time.perf_counter_ns() + SHARED_SLICE_NS
    await asyncio.sleep(0)
    return time.perf_counter_ns() + BATCH_SLICE_NS


async def _settled(decided: Decided | Awaitable[Decided]) -> Decided:
    if isinstance(decided, tuple):
        return decided
    return await decided
