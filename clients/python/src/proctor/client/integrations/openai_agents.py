"""OpenAI Agents SDK: a tool input guardrail and a `needs_approval` hook backed by Proctor.

    from agents import Agent, RunConfig, Runner
    from proctor.client import ProctorClient
    from proctor.client.integrations.openai_agents import ProctorGovernance

    governance = ProctorGovernance(ProctorClient("127.0.0.1:50051"), agent="mailer",
                                   reviewer="dana")
    agent = Agent(name="mailer", tools=governance.govern(send_email, search))
    run_config = RunConfig(tool_error_formatter=governance.tool_error_formatter)

    result = await Runner.run(agent, "...", run_config=run_config)
    while result.interruptions:                 # Proctor said require_approval
        state = result.to_state()
        for item in result.interruptions:
            print(await governance.approval(item))  # approval id and governance envelope
            state.approve(item)                 # or state.reject(item)
        result = await Runner.run(agent, state, run_config=run_config)

`govern(*tools)` equips each FunctionTool (in place, and returns them):

- `needs_approval`: Proctor decides the call; require_approval (still pending) answers
  True, so the SDK interrupts the run with its own ToolApprovalItem. An approval a
  reviewer already granted in Proctor (`proctor approvals approve`) needs no second one.
- a tool input guardrail: deny, a reviewer's denial, or Proctor unreachable rejects the
  call with the reason as the model's tool output (`reject_content`); the tool never runs.
  When the SDK approved the call (`state.approve(item)`) and Proctor's approval is still
  pending, the guardrail records that approval in Proctor (Approvals.ResolveApproval, by
  `reviewer` through `reviewer_client`), then presents the grant: the tool runs once.
- the tool's invocation: with a `budget_unit`, reserve before, commit after, release when
  it raises; a refused budget answers the model instead of running the tool.

Rejecting in the SDK (`state.reject(item)`) is recorded in Proctor as the reviewer's denial
through `tool_error_formatter` (pass it in RunConfig), which also tells the model Proctor's
reason; `approve()` and `reject()` here resolve in Proctor and in the SDK in one step and
work on a RunState restored in another process. With authentication on, `reviewer_client`
must be a reviewer's client: a principal never resolves an approval it requested.

request_id: the tool-call id, scoped by `run_id`, so a resumed run finds its approval.
Proctor calls run in a worker thread (the ProctorClient is blocking; `asyncio.to_thread`
carries the delegation path).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from agents import FunctionTool, ToolGuardrailFunctionOutput, ToolInputGuardrail
from agents.items import ToolApprovalItem
from agents.run_config import ToolErrorFormatterArgs
from agents.run_context import RunContextWrapper
from agents.tool_context import ToolContext
from agents.tool_guardrails import ToolInputGuardrailData

from ..client import ProctorClient
from ..errors import ProctorError
from .governor import ALLOWED, APPROVED, PENDING, ToolGovernor, ToolRefused, Verdict, acting
from .mapping import DEFAULT_TOPIC, ToolCall, ToolMapping, ToolRule

log = logging.getLogger("proctor.client.integrations")

GUARDRAIL_NAME = "proctor"
_CACHE_SIZE = 4096  # verdicts kept between needs_approval, the guardrail and the invocation


def _arguments(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _sdk_approval(ctx: ToolContext[Any]) -> bool | None:
    """The SDK's decision on this call: True approved, False rejected, None undecided.

    Since openai-agents 0.24 an approval belongs to the agent that asked for it, and
    get_approval_status(name, call_id) without that invocation answers None even after
    state.approve(item), so the approved call would be refused here. is_tool_approved is
    the SDK's name-only inspection: it answers for the call id when one owner holds a
    decision for it (None when ambiguous, which keeps the call pending: fail closed).
    """
    inspect = getattr(ctx, "is_tool_approved", None)
    if inspect is not None:
        status: bool | None = inspect(ctx.tool_name, ctx.tool_call_id)
        return status
    return ctx.get_approval_status(ctx.tool_name, ctx.tool_call_id)


class ProctorGovernance:
    """Proctor for the tools of OpenAI Agents SDK agents (see the module docstring).

    client: a ProctorClient. agent: the acting agent (appended to the current delegation()
    path unless already last). topic, rules, risk_tags, tenant, run_id, budget_unit,
    budget_amount: as the mapping and governor take them. reviewer / reviewer_client: who
    records a decision made in the SDK (reviewer_client defaults to `client`).
    """

    def __init__(
        self,
        client: ProctorClient,
        *,
        agent: str | None = None,
        topic: str = DEFAULT_TOPIC,
        rules: Mapping[str, ToolRule] | None = None,
        risk_tags: Mapping[str, Sequence[str]] | None = None,
        tenant: str = "",
        run_id: str = "",
        budget_unit: str | None = None,
        budget_amount: int = 1,
        reviewer: str = "",
        reviewer_client: ProctorClient | None = None,
        mapping: ToolMapping | None = None,
    ) -> None:
        self.governor = ToolGovernor(
            client, agent=agent, run_id=run_id,
            mapping=mapping or ToolMapping(topic=topic, tools=rules, risk_tags=risk_tags,
                                           tenant=tenant),
            budget_unit=budget_unit, budget_amount=budget_amount,
        )
        self.reviewer = reviewer
        self.reviewer_client = reviewer_client or client
        self.guardrail: ToolInputGuardrail[Any] = ToolInputGuardrail(
            guardrail_function=self._guard, name=GUARDRAIL_NAME)
        self._tools: dict[str, FunctionTool] = {}
        self._verdicts: OrderedDict[str, Verdict] = OrderedDict()

    # -- equipping tools -------------------------------------------------------------------

    def govern(self, *tools: FunctionTool) -> list[FunctionTool]:
        """Add the guardrail, the needs_approval hook and the budget around each tool."""
        for tool in tools:
            if not isinstance(tool, FunctionTool):
                raise TypeError(f"govern: a FunctionTool (got {type(tool).__name__})")
            self._tools[tool.name] = tool
            guards = list(tool.tool_input_guardrails or [])
            if self.guardrail not in guards:
                tool.tool_input_guardrails = [self.guardrail, *guards]
            tool.needs_approval = self._needs_approval_for(tool, tool.needs_approval)
            tool.on_invoke_tool = self._invoke_for(tool, tool.on_invoke_tool)
        return list(tools)

    def _call(self, name: str, args: dict[str, Any], call_id: str) -> ToolCall:
        tool = self._tools.get(name)
        declared = tuple(getattr(tool, "risk_tags", ()) or ()) if tool else ()
        return ToolCall(name, args, call_id, declared)

    async def _decide(self, call: ToolCall) -> Verdict:
        run_id = self.governor.run_id
        v = await asyncio.to_thread(self.governor.decide, call,
                                    scope=f"oa:{run_id}" if run_id else "oa")
        self._remember(v)
        return v

    def _remember(self, v: Verdict) -> None:
        self._verdicts[v.call.call_id] = v
        self._verdicts.move_to_end(v.call.call_id)
        while len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)

    async def _current(self, call: ToolCall) -> Verdict:
        """The verdict of a call: remembered (same arguments) and refreshed, or decided."""
        v = self._verdicts.get(call.call_id)
        if v is None or v.call.name != call.name or dict(v.call.args) != dict(call.args):
            return await self._decide(call)
        v = await asyncio.to_thread(self.governor.refresh, v)
        self._remember(v)
        return v

    def _needs_approval_for(
        self, tool: FunctionTool, own: Any,
    ) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]:
        async def needs_approval(ctx: RunContextWrapper[Any], params: dict[str, Any],
                                 call_id: str) -> bool:
            if own is True:
                return True
            if callable(own):
                mine = own(ctx, params, call_id)
                if (await mine if asyncio.iscoroutine(mine) else mine):
                    return True
            v = await self._decide(self._call(tool.name, dict(params), call_id))
            return v.state == PENDING
        return needs_approval

    # -- the guardrail and the invocation -----------------------------------------------------

    async def _guard(self, data: ToolInputGuardrailData) -> ToolGuardrailFunctionOutput:
        ctx = data.context
        call = self._call(ctx.tool_name, _arguments(ctx.tool_arguments), ctx.tool_call_id)
        v = await self._current(call)
        if v.state == PENDING:
            if _sdk_approval(ctx) is not True:
                # a pre-approval guardrail run: the SDK asks for the approval after this
                return ToolGuardrailFunctionOutput.allow({"proctor": v.envelope()})
            v = await self._record(v, approve=True, reason="approved in the OpenAI Agents SDK")
        if v.state == APPROVED:
            v = await asyncio.to_thread(self.governor.claim, v)
            self._remember(v)
        if v.state == ALLOWED:
            return ToolGuardrailFunctionOutput.allow({"proctor": v.envelope()})
        if v.state == PENDING:  # approved in the SDK, but Proctor could not record it
            return ToolGuardrailFunctionOutput.reject_content(
                f"Tool {call.name!r} was not run: approval {v.approval_id} is still pending "
                "in Proctor", {"proctor": v.envelope()})
        return ToolGuardrailFunctionOutput.reject_content(v.message, {"proctor": v.envelope()})

    def _invoke_for(
        self, tool: FunctionTool, invoke: Callable[[ToolContext[Any], str], Awaitable[Any]],
    ) -> Callable[[ToolContext[Any], str], Awaitable[Any]]:
        async def governed(ctx: ToolContext[Any], arguments: str) -> Any:
            call = self._call(tool.name, _arguments(arguments), ctx.tool_call_id)
            v = self._verdicts.get(call.call_id)
            if v is None or v.state != ALLOWED:
                v = await self._current(call)  # the guardrail was removed, or did not run
                if v.state == APPROVED:
                    v = await asyncio.to_thread(self.governor.claim, v)
            if v.state != ALLOWED:
                return v.message or f"Tool {tool.name!r} was not run: not allowed by Proctor"
            self._verdicts.pop(call.call_id, None)  # one run per allow
            try:
                hold = await asyncio.to_thread(self.governor.reserve, v)
            except ToolRefused as refused:
                return str(refused)
            ok = False
            try:
                with acting(v.request.delegation_path):
                    out = await invoke(ctx, arguments)
                ok = True
                return out
            finally:
                await asyncio.to_thread(self.governor.settle, hold, ok=ok)
        return governed

    # -- reviewers -----------------------------------------------------------------------------

    async def _record(self, v: Verdict, *, approve: bool, reason: str) -> Verdict:
        """Resolve a pending approval in Proctor as the configured reviewer."""
        try:
            await asyncio.to_thread(
                self.reviewer_client.resolve_approval, v.approval_id, approve,
                reviewer=self.reviewer, reason=reason)
        except ProctorError as error:
            # FAILED_PRECONDITION: someone resolved it first; Proctor's state decides.
            log.warning("approval %s not resolved in Proctor: %s", v.approval_id, error)
        v = await asyncio.to_thread(self.governor.refresh, v)
        self._remember(v)
        return v

    async def verdict(self, item: ToolApprovalItem) -> Verdict:
        """The verdict behind an interruption (decided again, same request_id, when this
        process has not seen it: a RunState restored elsewhere)."""
        raw = item.raw_item
        call_id = str(getattr(raw, "call_id", "") or "")
        name = item.tool_name or str(getattr(raw, "name", ""))
        return await self._current(self._call(name, _arguments(getattr(raw, "arguments", "")),
                                              call_id))

    async def approval(self, item: ToolApprovalItem) -> dict[str, Any]:
        """The approval id and governance envelope of an interruption, for a reviewer UI."""
        v = await self.verdict(item)
        return {"approval_id": v.approval_id, "state": v.state, **v.envelope()}

    async def approve(self, state: Any, item: ToolApprovalItem, *, reason: str = "") -> None:
        """Approve in Proctor (as the reviewer) and in the SDK's RunState."""
        v = await self.verdict(item)
        if v.state == PENDING:
            await self._record(v, approve=True, reason=reason or "approved")
        state.approve(item)

    async def reject(self, state: Any, item: ToolApprovalItem, *, reason: str = "") -> None:
        """Deny in Proctor (as the reviewer) and reject in the SDK, telling the model why."""
        v = await self.verdict(item)
        if v.state == PENDING:
            v = await self._record(v, approve=False, reason=reason or "rejected")
        state.reject(item, rejection_message=v.message or reason or None)

    async def tool_error_formatter(self, args: ToolErrorFormatterArgs[Any]) -> str | None:
        """For RunConfig(tool_error_formatter=...): an SDK rejection becomes the reviewer's
        denial in Proctor, and the model is told Proctor's reason."""
        if args.kind != "approval_rejected":
            return None
        v = self._verdicts.get(args.call_id)
        if v is None:
            log.warning("rejected call %s: no Proctor approval known in this process; it "
                        "stays pending until it expires", args.call_id)
            return None
        if v.state in (PENDING, APPROVED):
            v = await self._record(v, approve=False, reason="rejected in the OpenAI Agents SDK")
        return v.message or None


__all__ = ["GUARDRAIL_NAME", "ProctorGovernance"]
