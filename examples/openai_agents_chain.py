"""The seed's accountability chain in the OpenAI Agents SDK, governed by ProctorGovernance.

A (planner) delegates to B (researcher); B reads customer data, which needs approval: the
run stops with the SDK's own interruption and the reviewer approves it in the SDK
(`state.approve`), which Proctor records as the reviewer's decision; C (mailer) tries to
email the data out and the reviewer rejects it (`state.reject`), recorded as a denial.
Every model is a scripted Model (no network LLM). At the end: the audit envelope of C's
attempt. Run: python examples/openai_agents_chain.py  (needs 'proctor-client[openai-agents]').
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agents import Agent, RunConfig, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.usage import Usage
from chain_support import RUN_ID, server_from_args, show_envelope
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from proctor.client import ProctorClient, delegation
from proctor.client.integrations import ToolRule
from proctor.client.integrations.openai_agents import ProctorGovernance

RULES = {
    "delegate": ToolRule(topic="job.{run_id}.delegate.internal"),
    "read_customer_data": ToolRule(topic="job.{run_id}.read.customer-data",
                                   risk_tags=["customer-data", "pii"]),
    "send_email": ToolRule(topic="job.{run_id}.send.email", risk_tags=["external"]),
}


@function_tool
def delegate(to: str, task: str) -> str:
    """Hand a task to another agent of the fleet."""
    return f"{to} accepted: {task}"


@function_tool
def read_customer_data(customer: str) -> str:
    """Read a customer's record."""
    return f"{customer}: jane@example.com, 3 open orders"


@function_tool
def send_email(to: str, body: str) -> str:
    """Send an email outside the company."""
    return f"sent to {to}"


class Scripted(Model):
    """Calls one tool, then answers with what the tool returned."""

    def __init__(self, name: str, args: dict[str, Any]) -> None:
        self.name, self.args = name, args

    async def get_response(self, system_instructions: Any, input: Any, *rest: Any,
                           **kwargs: Any) -> ModelResponse:
        outputs = [i["output"] for i in input if isinstance(input, list)
                   and isinstance(i, dict) and i.get("type") == "function_call_output"]
        if not outputs:
            item: Any = ResponseFunctionToolCall(
                type="function_call", call_id=f"call-{self.name}", name=self.name,
                arguments=json.dumps(self.args), id=f"fc-{self.name}", status="completed")
        else:
            item = ResponseOutputMessage(
                id="msg", type="message", role="assistant", status="completed",
                content=[ResponseOutputText(type="output_text", annotations=[],
                                            text=f"{self.name}: {outputs[-1]}")])
        return ModelResponse(output=[item], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


async def run(governance: ProctorGovernance, name: str, tool: str, args: dict[str, Any],
              approve: bool) -> str:
    agent = Agent(name=name, model=Scripted(tool, args),
                  tools=governance.govern(delegate, read_customer_data, send_email))
    config = RunConfig(tool_error_formatter=governance.tool_error_formatter)
    result = await Runner.run(agent, "go", run_config=config)
    decision_id = ""
    while result.interruptions:
        state = result.to_state()
        for item in result.interruptions:
            info = await governance.approval(item)
            decision_id = info["decision_id"]
            print(f"  interrupted: {item.tool_name} by {' > '.join(info['delegation_path'])} "
                  f"needs approval {info['approval_id']} ({info['reason']})")
            print(f"  reviewer {'approves' if approve else 'rejects'} it in the SDK")
            state.approve(item) if approve else state.reject(item)
        result = await Runner.run(agent, state, run_config=config)
    print(f"  model read: {result.final_output}")
    return decision_id


async def chain(proctor: ProctorClient) -> str:
    def governance(agent: str) -> ProctorGovernance:
        return ProctorGovernance(proctor, agent=agent, rules=RULES, run_id=RUN_ID,
                                 reviewer="dana")

    with delegation("A"):
        print("A delegates to B")
        await run(governance("A"), "A", "delegate", {"to": "B", "task": "find Jane"}, True)
        with delegation("B"):
            print("B reads customer data")
            await run(governance("B"), "B", "read_customer_data", {"customer": "jane"}, True)
            print("C tries to send email")
            return await run(governance("C"), "C", "send_email",
                             {"to": "jane@example.com", "body": "your data"}, False)


def main() -> None:
    set_tracing_disabled(True)
    with server_from_args(__doc__ or "") as server, ProctorClient(server.address) as proctor:
        decision_id = asyncio.run(chain(proctor))
        show_envelope(server, decision_id)


if __name__ == "__main__":
    main()
