"""CrewAI: before/after tool-call hooks backed by Proctor.

    from proctor.client import ProctorClient
    from proctor.client.integrations.crewai import ProctorCrewHooks

    hooks = ProctorCrewHooks(ProctorClient("127.0.0.1:50051"), approval_wait=300)
    with hooks:                       # registers the hooks (hooks.install() / uninstall())
        crew.kickoff()

Before every tool call of every agent, Proctor decides:

- allow: the tool runs (with a `budget_unit`: reserved first, committed after it, or
  released when it failed; a refused budget blocks the call);
- deny: the call is blocked and the agent reads the rule's reason as the tool's result;
- require_approval: the hook waits up to `approval_wait` seconds for a reviewer (`proctor
  approvals approve|deny ID`) and then runs the tool once (approved) or blocks it with the
  denial's reason; with no wait (the default 0), or when the time runs out, the call is
  refused at once and the agent reads the approval id to wait on. The same call in the
  same task later finds the same approval (its request_id is the task id and a digest of
  the tool and its arguments), so a retried step runs once the reviewer has approved.
- Proctor unreachable: every call is blocked (fail closed).

The acting agent is `agent` (a string, or a function of the CrewAI agent), by default the
CrewAI agent's role, appended to the current `delegation()` path unless already last. The
run_id is `run_id`, by default the crew's id. Risk tags: a tool's `risk_tags` attribute,
plus `risk_tags={name: [...]}` and `rules={name: ToolRule(...)}`.

CrewAI runs hooks synchronously in the agent's thread: Proctor's answer (about a
millisecond) and any approval wait happen there.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from crewai.hooks import (
    ToolCallHookContext,
    register_after_tool_call_hook,
    register_before_tool_call_hook,
    unregister_after_tool_call_hook,
    unregister_before_tool_call_hook,
)

from ..client import ProctorClient
from ..delegation import MAX_AGENT_CHARS
from .governor import ALLOWED, APPROVED, Hold, ToolGovernor, ToolRefused, Verdict
from .mapping import DEFAULT_TOPIC, ToolCall, ToolMapping, ToolRule

BLOCKED_PREFIX = "Tool execution blocked by hook"
ERROR_PREFIX = "Error executing tool"
_OPEN_LIMIT = 4096  # calls between their before and after hooks, at most


@dataclass(frozen=True, slots=True)
class _Open:
    verdict: Verdict
    hold: Hold | None
    message: str  # set when the call was refused


def declared_tags(tool: Any) -> tuple[str, ...]:
    """A tool's own `risk_tags` (a BaseTool subclass may declare the field); CrewAI hands
    hooks a CrewStructuredTool that keeps the user's tool as `_original_tool`."""
    for candidate in (tool, getattr(tool, "_original_tool", None)):
        tags = getattr(candidate, "risk_tags", None)
        if tags:
            return (tags,) if isinstance(tags, str) else tuple(tags)
    return ()


def call_digest(tool_name: str, args: Mapping[str, Any]) -> str:
    text = json.dumps([tool_name, args], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class ProctorCrewHooks:
    """Proctor's before/after tool-call hooks for CrewAI (see the module docstring)."""

    def __init__(
        self,
        client: ProctorClient,
        *,
        agent: str | Callable[[Any], str] | None = None,
        topic: str = DEFAULT_TOPIC,
        rules: Mapping[str, ToolRule] | None = None,
        risk_tags: Mapping[str, Sequence[str]] | None = None,
        tenant: str = "",
        run_id: str | None = None,
        budget_unit: str | None = None,
        budget_amount: int = 1,
        approval_wait: float = 0.0,
        mapping: ToolMapping | None = None,
    ) -> None:
        self.governor = ToolGovernor(
            client,
            mapping=mapping or ToolMapping(topic=topic, tools=rules, risk_tags=risk_tags,
                                           tenant=tenant),
            budget_unit=budget_unit, budget_amount=budget_amount,
        )
        self.agent = agent
        self.run_id = run_id
        self.approval_wait = approval_wait
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._lock = threading.Lock()
        self._installed = False

    # -- registration ----------------------------------------------------------------------------

    def install(self) -> ProctorCrewHooks:
        """Register the hooks for every crew of this process (once)."""
        if not self._installed:
            register_before_tool_call_hook(self.before_tool_call)
            register_after_tool_call_hook(self.after_tool_call)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            unregister_before_tool_call_hook(self.before_tool_call)
            unregister_after_tool_call_hook(self.after_tool_call)
            self._installed = False

    def __enter__(self) -> ProctorCrewHooks:
        return self.install()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()

    # -- the hooks ---------------------------------------------------------------------------------

    def _agent_id(self, context: ToolCallHookContext) -> str | None:
        if callable(self.agent):
            return self.agent(context.agent)
        if self.agent:
            return self.agent
        role = str(getattr(context.agent, "role", "") or "").strip()
        return role[:MAX_AGENT_CHARS] or None

    def _call(self, context: ToolCallHookContext) -> tuple[ToolCall, str]:
        args = dict(context.tool_input or {})
        task_id = str(getattr(context.task, "id", "") or "")
        crew_id = str(getattr(context.crew, "id", "") or "")
        declared = declared_tags(context.tool)
        call_id = f"{task_id}:{call_digest(context.tool_name, args)}"
        run_id = self.run_id if self.run_id is not None else crew_id
        return ToolCall(context.tool_name, args, call_id, declared), run_id

    def decide(self, context: ToolCallHookContext) -> Verdict:
        """Proctor's verdict on the call, after any approval wait and the grant's claim."""
        call, run_id = self._call(context)
        v = self.governor.decide(call, agent=self._agent_id(context), run_id=run_id,
                                 scope="crewai")
        if v.pending and self.approval_wait > 0:
            v = self.governor.wait(v, self.approval_wait)
        if v.state == APPROVED:
            v = self.governor.claim(v)
        return v

    def before_tool_call(self, context: ToolCallHookContext) -> bool | None:
        """False blocks the call (CrewAI's contract); None lets it run."""
        v = self.decide(context)
        hold: Hold | None = None
        message = ""
        if v.state == ALLOWED:
            try:
                hold = self.governor.reserve(v)
            except ToolRefused as refused:
                message = str(refused)
        elif v.pending:
            message = (f"Tool {v.call.name!r} was not run: it needs approval "
                       f"{v.approval_id} ({v.decision.rule_id}: {v.decision.reason}); "
                       "try again once a reviewer has approved it")
        else:
            message = v.message
        self._keep(context, _Open(v, hold, message))
        return False if message else None

    def after_tool_call(self, context: ToolCallHookContext) -> str | None:
        """Settle the budget of a call that ran; give a refused call Proctor's reason."""
        with self._lock:
            entry = self._open.pop(id(context.tool_input), None)
        if entry is None:
            return None
        if entry.message:
            return entry.message
        result = context.tool_result or ""
        failed = (result.startswith((BLOCKED_PREFIX, ERROR_PREFIX))
                  or type(context.raw_tool_result).__name__ == "ToolFailure")
        self.governor.settle(entry.hold, ok=not failed)
        return None

    def _keep(self, context: ToolCallHookContext, entry: _Open) -> None:
        # Before and after hooks of one call see the same tool_input dict (CrewAI builds
        # both contexts around it); its id pairs them while the call is open.
        with self._lock:
            self._open[id(context.tool_input)] = entry
            while len(self._open) > _OPEN_LIMIT:
                _, stale = self._open.popitem(last=False)
                self.governor.settle(stale.hold, ok=False)


__all__ = ["ProctorCrewHooks", "call_digest"]
