"""What the gateway asks Proctor: may this call run, was it approved, is there budget for it?

`Governor.admit(tool, arguments, caller)` answers with an `Admission`: allowed,
or the text of the error result the caller gets. In order:

1. Evaluate the call (mapping.py makes the request). Proctor unreachable, or
   no answer in time: refused, failing closed, saying so. A request Proctor
   calls invalid (a tag over the limits, a topic too long): refused, naming it.
2. deny: refused with the rule and its reason.
3. require_approval: wait up to `approval_wait` seconds for a reviewer, then
   evaluate again presenting the approval, so that the grant is consumed for
   this very action; allowed only if that answer is allow. Otherwise refused,
   naming the approval id and what became of it (denied by whom and why,
   expired, still pending).
   The gateway remembers the approval it asked for, per action (tool,
   arguments, caller), and presents it when the same call comes again: a
   caller that gave up waiting and retries after the reviewer approved gets the
   approved call, not a second approval request. A denied, expired or used
   approval presented again changes nothing (Proctor makes a new one).
4. With `budget_unit` set: reserve `budget_amount` of that unit (tenant, the
   acting agent, run) before the upstream is called; refused when a budget
   refuses (naming it). `settle` commits after the upstream answered (the tool
   ran, even when its result is an error) and releases when it never answered.

`never_allowed(topics, caller)` asks Probe.ProbeTopics for tools/list.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from proctor.client import AsyncProctorClient, EvaluationRequest, ProctorError
from proctor.client.errors import InvalidRequestError, from_rpc_error
from proctor.v1 import probe_pb2, probe_pb2_grpc

from .mapping import ToolMapping, labels_of

REMEMBERED_APPROVALS = 4096
BUDGET_TTL_SECONDS = 3600
PROGRESS_SECONDS = 10.0
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the acting agent last in the path."""

    delegation_path: tuple[str, ...]
    tenant: str = ""
    run_id: str = ""

    @property
    def agent(self) -> str:
        return self.delegation_path[-1] if self.delegation_path else ""


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    why: str = ""  # when refused: the error result's text
    decision_id: str = ""
    reservation_id: str = ""


class Governor:
    """Asks Proctor about each call (see the module docstring)."""

    def __init__(self, client: AsyncProctorClient, mapping: ToolMapping, *,
                 approval_wait: float = 60.0, budget_unit: str = "",
                 budget_amount: int = 1) -> None:
        self.client = client
        self.mapping = mapping
        self.approval_wait = approval_wait
        self.budget_unit = budget_unit
        self.budget_amount = budget_amount
        self._probe = probe_pb2_grpc.ProbeStub(client.channel)
        self._approvals: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def request(self, tool: str, arguments: Mapping[str, Any] | None,
                caller: Caller) -> EvaluationRequest:
        return EvaluationRequest(
            topic=self.mapping.topic(tool), delegation_path=caller.delegation_path,
            risk_tags=self.mapping.tags(tool), tenant=caller.tenant, run_id=caller.run_id,
            labels=labels_of(arguments),
        )

    async def admit(self, tool: str, arguments: Mapping[str, Any] | None, caller: Caller,
                    progress: Progress | None = None) -> Admission:
        request = self.request(tool, arguments, caller)
        key = _action_key(request)
        presented = self._approvals.get(key, "")
        try:
            first = await self.client.evaluate(_presenting(request, presented))
            if first.decision == "require_approval" and first.approval_id:
                self._remember(key, first.approval_id)
                final = await self._await_approval(request, first, progress)
            else:
                final = first
        except InvalidRequestError as e:
            return Admission(False, f"Proctor refused the request for tool {tool!r}: {e.details}")
        except ProctorError as e:
            return Admission(False, _unreachable(e))
        if final.decision != "require_approval":
            self._approvals.pop(key, None)
        if final.decision == "allow":
            return await self._reserve(caller, final.decision_id)
        if final.decision == "deny":
            return Admission(False, f"Denied by Proctor policy (rule {final.rule_id}): "
                             f"{final.reason} [decision {final.decision_id}]", final.decision_id)
        if not final.approval_id:
            return Admission(False, f"Needs approval (rule {final.rule_id}): {final.reason}; "
                             "no approval could be requested, so the call is refused",
                             final.decision_id)
        waited = f" after {self.approval_wait:g}s" if self.approval_wait > 0 else ""
        return Admission(False, f"Needs approval (rule {final.rule_id}): {final.reason}. "
                         f"Approval {final.approval_id} is still pending{waited}: once a "
                         f"reviewer approves it (proctor approvals approve {final.approval_id}), "
                         "call the tool again with the same arguments.", final.decision_id)

    async def _await_approval(self, request: EvaluationRequest, first: Any,
                              progress: Progress | None) -> Any:
        """Wait for the reviewer; the answer that decides the call (see the module docstring)."""
        approval_id = first.approval_id
        if self.approval_wait <= 0:
            return first
        # In slices, with a progress notification each: clients that reset their timeout on
        # progress keep waiting as long as the reviewer may take.
        end = time.monotonic() + self.approval_wait
        while True:
            left = end - time.monotonic()
            if progress is not None:
                await progress(f"waiting for a reviewer to resolve approval {approval_id} "
                               f"({max(0.0, left):.0f}s left)")
            state = await self.client.wait_for_approval(
                approval_id, timeout=max(0.0, min(PROGRESS_SECONDS, left)))
            if not state.pending or time.monotonic() >= end:
                break
        if state.approved:
            return await self.client.evaluate(_presenting(request, approval_id))
        if state.pending:
            return first
        if state.status == "denied":
            by = f" by {state.reviewer}" if state.reviewer else ""
            why = f": {state.resolution_reason}" if state.resolution_reason else ""
            return _replace_reason(first, f"{first.reason} (approval {approval_id} was "
                                   f"denied{by}{why})", decision="deny")
        return _replace_reason(first, f"{first.reason} (approval {approval_id} is "
                               f"{state.status})", decision="deny")

    async def _reserve(self, caller: Caller, decision_id: str) -> Admission:
        if not self.budget_unit:
            return Admission(True, decision_id=decision_id)
        try:
            r = await self.client.reserve(
                self.budget_unit, self.budget_amount, reservation_id=uuid.uuid4().hex,
                tenant=caller.tenant, agent_id=caller.agent, run_id=caller.run_id,
                ttl_seconds=BUDGET_TTL_SECONDS)
        except ProctorError as e:
            return Admission(False, _unreachable(e), decision_id)
        if not r.granted:
            left = next((b for b in r.budgets if b.budget_id == r.refused_by), None)
            detail = f" ({left.used} of {left.limit} {left.unit} used)" if left else ""
            return Admission(False, f"Budget {r.refused_by!r} refused {self.budget_amount} "
                             f"{self.budget_unit}{detail}: the call is not made", decision_id)
        return Admission(True, decision_id=decision_id, reservation_id=r.reservation_id)

    async def settle(self, admission: Admission, ran: bool) -> None:
        """Commit the call's reservation when the upstream answered, release it otherwise.
        A failure here is not the caller's: the reservation expires after its TTL."""
        if not admission.reservation_id:
            return
        try:
            if ran:
                await self.client.commit(admission.reservation_id, self.budget_amount)
            else:
                await self.client.release(admission.reservation_id)
        except ProctorError:
            pass

    async def never_allowed(self, tools: Sequence[str], caller: Caller) -> set[str]:
        """The tools whose topic this caller can never be allowed (Probe.ProbeTopics).
        ProctorError when Proctor does not answer (the caller fails closed)."""
        topics = {tool: self.mapping.topic(tool) for tool in tools}
        request = probe_pb2.ProbeTopicsRequest(
            tenant=caller.tenant, delegation_path=list(caller.delegation_path),
            run_id=caller.run_id, topics=sorted(set(topics.values())))
        try:
            response = await self._probe.ProbeTopics(
                request, timeout=self.client.options.timeout,
                metadata=self.client.options.metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e, "ProbeTopics") from None
        never = {r.topic for r in response.results if r.never_allowed}
        return {tool for tool, topic in topics.items() if topic in never}

    def _remember(self, key: tuple[Any, ...], approval_id: str) -> None:
        self._approvals[key] = approval_id
        self._approvals.move_to_end(key)
        while len(self._approvals) > REMEMBERED_APPROVALS:
            self._approvals.popitem(last=False)


def _action_key(r: EvaluationRequest) -> tuple[Any, ...]:
    return (r.topic, tuple(r.delegation_path), r.tenant, r.run_id,
            tuple(sorted(t.lower() for t in r.risk_tags)), tuple(sorted((r.labels or {}).items())))


def _presenting(r: EvaluationRequest, approval_id: str) -> EvaluationRequest:
    return EvaluationRequest(topic=r.topic, delegation_path=r.delegation_path,
                             risk_tags=r.risk_tags, tenant=r.tenant, run_id=r.run_id,
                             labels=r.labels, approval_id=approval_id)


def _replace_reason(result: Any, reason: str, decision: str | None = None) -> Any:
    return replace(result, reason=reason, decision=decision or result.decision)


def _unreachable(e: ProctorError) -> str:
    what = "could not be reached" if e.code in (grpc.StatusCode.UNAVAILABLE,
                                                grpc.StatusCode.DEADLINE_EXCEEDED) \
        else "did not answer"
    return (f"Proctor {what} ({e.code.name}: {e.details}), so the call is refused "
            "(the gateway fails closed)")
