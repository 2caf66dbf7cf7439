"""The OpenAI Agents SDK integration with the real SDK, a scripted Model and a live
`proctor serve`: deny through the tool input guardrail, require_approval through
needs_approval as the SDK's own interruption, and the SDK's approve/reject recorded in
Proctor as the reviewer's decision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from agents import Agent, FunctionTool, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from proctor.client import ProctorClient, delegation
from proctor.client.integrations.openai_agents import ProctorGovernance
from tests.support.proctor import ProctorProcess

from .conftest import Ledger, approvals_of, reviewer

set_tracing_disabled(True)


class ScriptedModel(Model):
    """Emits fixed function calls on its first turn, then a final answer; keeps its inputs."""

    def __init__(self, calls: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
        self.calls = list(calls)
        self.inputs: list[Any] = []

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any,
                           tools: Any, output_schema: Any, handoffs: Any, tracing: Any,
                           **kwargs: Any) -> ModelResponse:
        self.inputs.append(input)
        answered = {i.get("call_id") for i in input if isinstance(input, list)
                    and isinstance(i, dict) and i.get("type") == "function_call_output"}
        if not answered:
            out: list[Any] = [
                ResponseFunctionToolCall(type="function_call", call_id=cid, name=name,
                                         arguments=json.dumps(args), id=f"fc_{cid}",
                                         status="completed")
                for cid, name, args in self.calls]
        else:
            out = [ResponseOutputMessage(
                id="msg", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", text="done", annotations=[])])]
        return ModelResponse(output=out, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def outputs(self) -> dict[str, str]:
        """The tool outputs the model read last, by call id."""
        return {i["call_id"]: i["output"] for i in self.inputs[-1]
                if isinstance(i, dict) and i.get("type") == "function_call_output"}


def make_tools(ledger: Ledger) -> list[FunctionTool]:
    @function_tool
    def search(q: str) -> str:
        """Search."""
        ledger.record("search", q=q)
        return f"results for {q}"

    @function_tool
    def delete_all() -> str:
        """Delete everything."""
        ledger.record("delete_all")
        return "deleted"

    @function_tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        ledger.record("send_email", to=to)
        return f"sent to {to}"

    return [search, delete_all, send_email]


async def run(governance: ProctorGovernance, model: ScriptedModel, ledger: Ledger,
              decide: Any = None) -> Any:
    agent = Agent(name="mailer", model=model, tools=governance.govern(*make_tools(ledger)))
    rc = RunConfig(tool_error_formatter=governance.tool_error_formatter)
    result = await Runner.run(agent, "go", run_config=rc)
    while result.interruptions and decide is not None:
        state = result.to_state()
        for item in result.interruptions:
            await decide(state, item)
        result = await Runner.run(agent, state, run_config=rc)
    return result


def test_allow_runs_deny_is_rejected_with_the_reason(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([("c1", "search", {"q": "cats"}), ("c2", "delete_all", {})])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id)
    result = asyncio.run(run(gov, model, ledger))
    assert result.final_output == "done" and not result.interruptions
    assert ledger.runs == [("search", {"q": "cats"})]
    out = model.outputs()
    assert out["c1"] == "results for cats"
    assert "Deleting everything is never allowed" in out["c2"]


def test_approving_in_the_sdk_is_recorded_in_proctor_and_runs_once(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([("c1", "send_email", {"to": "a@x.io", "body": "hi"})])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id, reviewer="dana")
    seen: list[dict[str, Any]] = []

    async def approve(state: Any, item: Any) -> None:
        seen.append(await gov.approval(item))
        assert ledger.runs == []
        state.approve(item)  # the SDK's own approval

    with delegation("planner"):
        result = asyncio.run(run(gov, model, ledger, approve))
    assert result.final_output == "done"
    assert ledger.runs == [("send_email", {"to": "a@x.io"})]
    [env] = seen
    assert env["delegation_path"] == ["planner", "mailer"]
    assert (env["rule_id"], env["reason"]) == ("approve-email", "Emails leave the company")
    [a] = approvals_of(client, run_id)
    assert (a.approval_id, a.status, a.reviewer) == (env["approval_id"], "consumed", "dana")


def test_rejecting_in_the_sdk_is_the_reviewers_denial_in_proctor(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([("c1", "send_email", {"to": "a@x.io", "body": "hi"})])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id, reviewer="dana")

    async def reject(state: Any, item: Any) -> None:
        state.reject(item)

    result = asyncio.run(run(gov, model, ledger, reject))
    assert result.final_output == "done" and ledger.runs == []
    [a] = approvals_of(client, run_id)
    assert (a.status, a.reviewer) == ("denied", "dana")
    assert a.approval_id in model.outputs()["c1"]


def test_the_helpers_resolve_in_proctor_and_the_sdk_at_once(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([("c1", "send_email", {"to": "a@x.io", "body": "1"}),
                           ("c2", "send_email", {"to": "b@x.io", "body": "2"})])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id, reviewer="dana")

    async def decide(state: Any, item: Any) -> None:
        if item.raw_item.call_id == "c1":
            await gov.approve(state, item, reason="known customer")
        else:
            await gov.reject(state, item, reason="unknown address")

    result = asyncio.run(run(gov, model, ledger, decide))
    assert result.final_output == "done"
    assert ledger.runs == [("send_email", {"to": "a@x.io"})]
    assert "unknown address" in model.outputs()["c2"]
    states = sorted((a.status, a.resolution_reason) for a in approvals_of(client, run_id))
    assert states == [("consumed", "known customer"), ("denied", "unknown address")]


def test_an_approval_granted_in_proctor_first_needs_no_sdk_interruption(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    # The first run pauses; the reviewer approves in Proctor; a fresh run of the same call
    # (same call id, so the same request_id) finds the grant and runs the tool.
    model = ScriptedModel([("c1", "send_email", {"to": "a@x.io", "body": "hi"})])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id)
    first = asyncio.run(run(gov, model, ledger))
    [item] = first.interruptions
    approval_id = asyncio.run(gov.approval(item))["approval_id"]
    reviewer(server, "approve", approval_id)
    again = asyncio.run(run(ProctorGovernance(client, agent="mailer", run_id=run_id),
                            ScriptedModel(model.calls), ledger))
    assert not again.interruptions and again.final_output == "done"
    assert ledger.runs == [("send_email", {"to": "a@x.io"})]


def test_budget_refusal_stops_the_tool(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([(f"c{i}", "search", {"q": str(i)}) for i in range(3)])
    gov = ProctorGovernance(client, agent="mailer", run_id=run_id, budget_unit="tool_calls")
    asyncio.run(run(gov, model, ledger))
    assert ledger.count("search") == 2  # the run's budget holds two calls
    refused = [o for o in model.outputs().values() if "run-tool-calls" in o]
    assert len(refused) == 1
    [b] = client.budget("run-tool-calls", run_id=run_id)
    assert (b.used, b.reserved) == (2, 0)


def test_fail_closed_when_the_server_is_down(dead_client: ProctorClient, ledger: Ledger) -> None:
    model = ScriptedModel([("c1", "search", {"q": "x"})])
    result = asyncio.run(run(ProctorGovernance(dead_client, agent="m"), model, ledger))
    assert not result.interruptions and ledger.runs == []
    assert "UNAVAILABLE" in model.outputs()["c1"]


def test_a_tools_declared_risk_tags_reach_the_policy(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    @function_tool
    def export(table: str) -> str:
        """Export a table."""
        ledger.record("export", table=table)
        return "exported"

    export.risk_tags = ["pii"]  # type: ignore[attr-defined]
    gov = ProctorGovernance(client, agent="etl", run_id=run_id)
    agent = Agent(name="etl", model=ScriptedModel([("c1", "export", {"table": "t"})]),
                  tools=gov.govern(export))
    result = asyncio.run(Runner.run(agent, "go"))
    # tagged pii, the export needs approval (approve-export); untagged, the default denies
    assert [i.tool_name for i in result.interruptions] == ["export"]
    assert [a.rule_id for a in approvals_of(client, run_id)] == ["approve-export"]
    assert ledger.runs == []
