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
from typing import Any

import grpc
from proctor.v1 import decisions_pb2, decisions_pb2_grpc

import engine

from .ids import UlidGenerator

MAX_BATCH_ITEMS = 1000
MAX_APPROVAL_ID_CHARS = 128

DECISION_TO_PROTO = {
    "allow": decisions_pb2.DECISION_ALLOW,
    "deny": decisions_pb2.DECISION_DENY,
    "require_approval": decisions_pb2.DECISION_REQUIRE_APPROVAL,
}
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
# Trailing metadata naming the process that answered (several workers share a port).
WORKER_METADATA_KEY = "proctor-worker"


def to_engine_request(msg: decisions_pb2.EvaluateRequest) -> engine.Request:
    """Validate and normalize one EvaluateRequest; raises engine.RequestError."""
    if len(msg.approval_id) > MAX_APPROVAL_ID_CHARS:
        raise engine.RequestError(
            "approval_id", f"at most {MAX_APPROVAL_ID_CHARS} characters"
        )
    # Per call: a slice of a repeated field is a plain list, cheaper than tuple() of the
    # container; empty containers are skipped (most calls carry no labels or tags); a map
    # is copied key by key (dict() of it goes through the Mapping ABC's Python methods).
    tags = msg.risk_tags
    labels = msg.labels
    return engine.Request(
        msg.topic,
        tags[:] if tags else (),
        tuple(msg.delegation_path),
        msg.tenant,
        msg.run_id,
        msg.request_id,
        {k: labels[k] for k in labels} if labels else None,
    )


class DecisionsService(decisions_pb2_grpc.DecisionsServicer):
    """Evaluate and EvaluateBatch on the holder's serving policy."""

    def __init__(self, holder: Any, audit: Any, metrics: Any, sync_audit: bool = False,
                 approvals: Any = None, name_worker: bool = False) -> None:
        self.holder = holder
        # server.approvals.gate.ApprovalGate: require_approval creates an approval; a presented
        # approved id for the very same action turns it into allow once. None: no approvals.
        self.approvals = approvals
        self.audit = audit
        self.metrics = metrics
        # With --audit-durability sync a record waits for the disk: a batch then records
        # its events concurrently so that one group commit covers them all.
        self.sync_audit = sync_audit
        self._ids = UlidGenerator()
        # Several workers share the port: each answer names the process that gave it. One
        # worker: Admin calls still name it, and Evaluate saves the trailer's cost (~20 µs).
        self._worker = ((WORKER_METADATA_KEY, str(os.getpid())),) if name_worker else None

    async def Evaluate(
        self, request: decisions_pb2.EvaluateRequest, context: grpc.aio.ServicerContext
    ) -> decisions_pb2.EvaluateResponse:
        started = time.perf_counter_ns()
        if self._worker is not None:
            context.set_trailing_metadata(self._worker)
        try:
            req = to_engine_request(request)
        except engine.RequestError as e:
            self.metrics.invalid("Evaluate", e.field)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        response, event = await self._decide(req, request, started)
        await self.audit.record("decision", event)
        self.metrics.observe_evaluate((time.perf_counter_ns() - started) / 1e9)
        return response

    async def EvaluateBatch(
        self, request: decisions_pb2.EvaluateBatchRequest, context: grpc.aio.ServicerContext
    ) -> decisions_pb2.EvaluateBatchResponse:
        started = time.perf_counter_ns()
        if self._worker is not None:
            context.set_trailing_metadata(self._worker)
        items = request.requests
        if len(items) > MAX_BATCH_ITEMS:
            self.metrics.invalid("EvaluateBatch", "requests")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"requests: at most {MAX_BATCH_ITEMS} items per batch, got {len(items)}",
            )
        out = decisions_pb2.EvaluateBatchResponse()
        events: list[dict[str, Any]] = []
        for item in items:
            slot = out.results.add()
            item_started = time.perf_counter_ns()
            try:
                req = to_engine_request(item)
            except engine.RequestError as e:
                self.metrics.invalid("EvaluateBatch", e.field)
                slot.error.code = _INVALID_ARGUMENT
                slot.error.message = str(e)
                continue
            response, event = await self._decide(req, item, item_started)
            slot.response.CopyFrom(response)
            events.append(event)
        if self.sync_audit:
            # Enqueued in item order (each record enqueues before it first waits).
            await asyncio.gather(*[self.audit.record("decision", event) for event in events])
        else:
            for event in events:
                await self.audit.record("decision", event)
        self.metrics.observe_batch((time.perf_counter_ns() - started) / 1e9, len(items))
        return out

    async def _decide(
        self, req: engine.Request, msg: decisions_pb2.EvaluateRequest, started: int
    ) -> tuple[decisions_pb2.EvaluateResponse, dict[str, Any]]:
        """Evaluate one validated request on the serving policy: the answer and its audit event."""
        decision = self.holder.current.evaluate(req, explain=msg.explain)
        decision_id = self._ids.new()
        if self.approvals is not None and (
            decision.decision == "require_approval" or msg.approval_id
        ):
            gate = await self.approvals.apply(req, decision, msg.approval_id, decision_id)
            return self._answer(req, decision, decision_id, started, gate.decision,
                                gate.reason, gate.approval_id, gate.audit)
        return self._answer(req, decision, decision_id, started, decision.decision,
                            decision.reason, "", None)

    def _answer(
        self, req: engine.Request, decision: engine.Decision, decision_id: str, started: int,
        outcome: str, reason: str, approval_id: str, extra: dict[str, Any] | None,
    ) -> tuple[decisions_pb2.EvaluateResponse, dict[str, Any]]:
        self.metrics.decided(outcome, decision.rule_id)
        response = decisions_pb2.EvaluateResponse(
            decision=DECISION_TO_PROTO[outcome],
            rule_id=decision.rule_id,
            reason=reason,
            policy_version=decision.policy_version,
            decision_id=decision_id,
            approval_id=approval_id,
        )
        if decision.matched_rule_ids:
            response.matched_rule_ids.extend(decision.matched_rule_ids)
        if decision.derived_tags:
            response.derived_tags.extend(decision.derived_tags)
        # Tuples and the request's own label dict go in as they are: the audit only
        # reads them (and writes tuples as JSON arrays). These keys are the audit's
        # DECISION_FIELDS (written by its template); approval steps add more.
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
        }
        if extra:
            event.update(extra)
        return response, event
