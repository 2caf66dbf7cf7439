"""LangGraph: `ProctorToolNode`, a governed drop-in for `langgraph.prebuilt.ToolNode`.

    from proctor.client import ProctorClient
    from proctor.client.integrations.langgraph import ProctorToolNode

    proctor = ProctorClient("127.0.0.1:50051")
    builder.add_node("tools", ProctorToolNode([search, send_email], client=proctor,
                                              agent="mailer", topic="tool.{tool_name}"))
    graph = builder.compile(checkpointer=InMemorySaver())

Each tool call of the model's message is decided by Proctor before any tool runs:

- allow: the tool runs (inside the call's delegation path, so a sub-agent it starts
  evaluates with the whole chain);
- deny: the tool never runs; the model receives a ToolMessage (status "error") carrying
  the rule's reason, with the governance envelope as its `artifact`;
- require_approval: the graph pauses with `interrupt()`. The payload carries the approval
  id, the tool call and the governance envelope (`approval_payload` below). Resume with
  `graph.invoke(Command(resume=...), config)` once a reviewer has decided (`proctor
  approvals approve|deny ID`): the node runs again, finds the same approval (the request_id
  is the thread id and the tool-call id) and runs the tool exactly once if it was
  approved, or returns the denial's reason. Resuming while it is still pending pauses
  again. The resume value is not a decision: Proctor's approval is the only authority.

No tool of a message runs until every call of that message has its answer, so a node
re-executed after an interrupt never runs an allowed tool twice. Several pending calls
pause one after another, in the message's order. With a `budget_unit`, each tool that runs
reserves `budget_amount` of it first (where the policy has a budget of that unit), commits
after, releases when the tool fails; a refused budget stops the tool and the model is told.
Proctor unreachable: every call is refused (fail closed).

Tags: a tool's `metadata["risk_tags"]` and its `tags`, plus `risk_tags={name: [...]}` and
`rules={name: ToolRule(...)}`. Sync (`invoke`) and async (`ainvoke`) graphs both work; in
async graphs the Proctor calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.prebuilt import ToolNode
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from ..client import ProctorClient
from .governor import ToolGovernor, ToolRefused, Verdict, acting
from .mapping import DEFAULT_TOPIC, ToolCall, ToolMapping, ToolRule

# The verdicts of the tool calls the node is running, by tool-call id: set by the node's
# function, read by the per-call wrapper (ToolNode runs calls in threads or tasks that copy
# the context).
_VERDICTS: contextvars.ContextVar[dict[str, Verdict] | None] = contextvars.ContextVar(
    "proctor_langgraph_verdicts", default=None
)

INTERRUPT_KIND = "proctor.approval"


def approval_payload(v: Verdict) -> dict[str, Any]:
    """The interrupt's value for a pending call: the approval id, the tool call, and the
    governance envelope (its fields at the top level, and whole under "envelope")."""
    env = v.envelope()
    return {
        "kind": INTERRUPT_KIND,
        "approval_id": v.approval_id,
        "tool": v.call.name,
        "tool_call_id": v.call.call_id,
        "args": dict(v.call.args),
        **{k: env[k] for k in ("run_id", "tenant", "delegation_path", "topic", "risk_tags",
                               "labels", "decision", "rule_id", "reason", "policy_version",
                               "decision_id")},
        "approval": env["approval"],
        "envelope": env,
    }


def declared_tags(tool: BaseTool | None) -> tuple[str, ...]:
    if tool is None:
        return ()
    meta = tool.metadata or {}
    tags = meta.get("risk_tags") or ()
    return (*([tags] if isinstance(tags, str) else tags), *(tool.tags or ()))


class ProctorToolNode(ToolNode):
    """`ToolNode` that asks Proctor before every tool call (see the module docstring).

    client: a ProctorClient. agent: the acting agent (appended to the current delegation()
    path unless already last; None: the current path alone). topic: the topic template
    (`{tool_name}`, `{agent}`, `{run_id}`, `{tenant}`). rules / risk_tags: per-tool
    settings. tenant, run_id: sent with every call (run_id defaults to the graph's
    thread_id). budget_unit / budget_amount: reserve around each call. Every other keyword
    is ToolNode's (name, tags, handle_tool_errors, messages_key, wrap_tool_call, ...).
    """

    def __init__(
        self,
        tools: Sequence[BaseTool | Callable[..., Any]],
        *,
        client: ProctorClient,
        agent: str | None = None,
        topic: str = DEFAULT_TOPIC,
        rules: Mapping[str, ToolRule] | None = None,
        risk_tags: Mapping[str, Sequence[str]] | None = None,
        tenant: str = "",
        run_id: str | None = None,
        budget_unit: str | None = None,
        budget_amount: int = 1,
        mapping: ToolMapping | None = None,
        **kwargs: Any,
    ) -> None:
        self._user_wrap = kwargs.pop("wrap_tool_call", None)
        self._user_awrap = kwargs.pop("awrap_tool_call", None)
        super().__init__(tools, wrap_tool_call=self._governed_call,
                         awrap_tool_call=self._agoverned_call, **kwargs)
        self.governor = ToolGovernor(
            client, agent=agent,
            mapping=mapping or ToolMapping(topic=topic, tools=rules, risk_tags=risk_tags,
                                           tenant=tenant),
            budget_unit=budget_unit, budget_amount=budget_amount,
        )
        self._run_id = run_id

    # -- deciding, before any tool runs --------------------------------------------------------

    def _scope(self, config: RunnableConfig) -> tuple[str, str]:
        """(run_id, request-id scope) of this graph run: the thread keeps them stable across
        the node's re-executions."""
        thread = str((config.get("configurable") or {}).get("thread_id") or "")
        run_id = self._run_id if self._run_id is not None else thread
        return run_id, f"lg:{thread}" if thread else run_id

    def _decide_all(self, input: Any, config: RunnableConfig) -> dict[str, Verdict]:
        calls, _ = self._parse_input(input)
        run_id, scope = self._scope(config)
        out: dict[str, Verdict] = {}
        for call in calls:
            tool = self.tools_by_name.get(call["name"])
            tc = ToolCall(call["name"], dict(call.get("args") or {}), str(call.get("id") or ""),
                          declared_tags(tool))
            out[tc.call_id] = self.governor.decide(tc, run_id=run_id, scope=scope)
        return out

    def _func(self, input: Any, config: RunnableConfig, runtime: Any) -> Any:
        verdicts = self._decide_all(input, config)
        for key, v in verdicts.items():
            while v.pending:
                interrupt(approval_payload(v))  # raises while nothing answered it
                v = self.governor.refresh(v)
            verdicts[key] = v
        token = _VERDICTS.set(verdicts)
        try:
            return super()._func(input, config, runtime)
        finally:
            _VERDICTS.reset(token)

    async def _afunc(self, input: Any, config: RunnableConfig, runtime: Any) -> Any:
        verdicts = await asyncio.to_thread(self._decide_all, input, config)
        for key, v in verdicts.items():
            while v.pending:
                interrupt(approval_payload(v))
                v = await asyncio.to_thread(self.governor.refresh, v)
            verdicts[key] = v
        token = _VERDICTS.set(verdicts)
        try:
            return await super()._afunc(input, config, runtime)
        finally:
            _VERDICTS.reset(token)

    # -- running, one call at a time ------------------------------------------------------------

    def _verdict(self, request: ToolCallRequest) -> Verdict | None:
        return (_VERDICTS.get() or {}).get(str(request.tool_call.get("id") or ""))

    def _refusal(self, request: ToolCallRequest, text: str,
                 v: Verdict | None) -> ToolMessage:
        call = request.tool_call
        return ToolMessage(content=text, name=call["name"], tool_call_id=call["id"],
                           status="error", artifact={"proctor": v.envelope() if v else None})

    def _governed_call(self, request: ToolCallRequest,
                       execute: Callable[[ToolCallRequest], ToolMessage | Command[Any]]) -> Any:
        v = self._verdict(request)
        if v is None:
            return self._refusal(request, "Tool was not run: Proctor has not decided it", None)
        v = self.governor.claim(v)
        if not v.allowed:
            return self._refusal(request, v.message, v)
        try:
            hold = self.governor.reserve(v)
        except ToolRefused as refused:
            return self._refusal(request, str(refused), v)
        ok = False
        try:
            with acting(v.request.delegation_path):
                out = (self._user_wrap(request, execute) if self._user_wrap
                       else execute(request))
            ok = not (isinstance(out, ToolMessage) and out.status == "error")
            return out
        finally:
            self.governor.settle(hold, ok=ok)

    async def _agoverned_call(
        self, request: ToolCallRequest,
        execute: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> Any:
        v = self._verdict(request)
        if v is None:
            return self._refusal(request, "Tool was not run: Proctor has not decided it", None)
        v = await asyncio.to_thread(self.governor.claim, v)
        if not v.allowed:
            return self._refusal(request, v.message, v)
        try:
            hold = await asyncio.to_thread(self.governor.reserve, v)
        except ToolRefused as refused:
            return self._refusal(request, str(refused), v)
        ok = False
        try:
            with acting(v.request.delegation_path):
                out = await (self._user_awrap(request, execute) if self._user_awrap
                             else execute(request))
            ok = not (isinstance(out, ToolMessage) and out.status == "error")
            return out
        finally:
            await asyncio.to_thread(self.governor.settle, hold, ok=ok)


__all__ = ["INTERRUPT_KIND", "ProctorToolNode", "approval_payload"]
