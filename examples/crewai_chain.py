"""The seed's accountability chain in CrewAI, governed by ProctorCrewHooks.

A (planner) delegates to B (researcher); B reads customer data and the before-tool-call
hook waits while a reviewer (in another terminal, here a thread running the real `proctor
approvals` CLI) approves it; C (mailer) tries to email the data out, the reviewer denies
it and the agent reads the denial instead of a tool result. Every LLM is scripted (no
network). At the end: the audit envelope of C's attempt.
Run: python examples/crewai_chain.py  (needs 'proctor-client[crewai]').
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

for name, value in (("CREWAI_DISABLE_TELEMETRY", "true"), ("CREWAI_TRACING_ENABLED", "false"),
                    ("OTEL_SDK_DISABLED", "true")):
    os.environ.setdefault(name, value)  # no network here: no telemetry

from chain_support import RUN_ID, Server, review, server_from_args, show_envelope  # noqa: E402
from crewai import Agent, Crew, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import tool  # noqa: E402

from proctor.client import ProctorClient, delegation  # noqa: E402
from proctor.client.integrations import ToolRule  # noqa: E402
from proctor.client.integrations.crewai import ProctorCrewHooks  # noqa: E402

RULES = {
    "delegate": ToolRule(topic="job.{run_id}.delegate.internal"),
    "read_customer_data": ToolRule(topic="job.{run_id}.read.customer-data",
                                   risk_tags=["customer-data", "pii"]),
    "send_email": ToolRule(topic="job.{run_id}.send.email", risk_tags=["external"]),
}


@tool("delegate")
def delegate(to: str, task: str) -> str:
    """Hand a task to another agent of the fleet."""
    return f"{to} accepted: {task}"


@tool("read_customer_data")
def read_customer_data(customer: str) -> str:
    """Read a customer's record."""
    return f"{customer}: jane@example.com, 3 open orders"


@tool("send_email")
def send_email(to: str, body: str) -> str:
    """Send an email outside the company."""
    return f"sent to {to}"


class Scripted(BaseLLM):
    """Calls one tool (ReAct text), then gives the tool's answer as its final answer."""

    def __init__(self, tool_name: str, args: dict[str, Any]) -> None:
        super().__init__(model="scripted")
        self._step = (f"Thought: I will use {tool_name}\nAction: {tool_name}\n"
                      f"Action Input: {json.dumps(args)}")
        self._calls = 0

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        self._calls += 1
        if self._calls == 1:
            return self._step
        # the tool's result comes back after "Observation:" in the agent's own turn
        turns = [m["content"] for m in messages if m.get("role") == "assistant"]
        seen = turns[-1].rsplit("Observation: ", 1)[-1].split("\n")[0] if turns else ""
        return f"Thought: done\nFinal Answer: {seen}"

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 100_000


def run_crew(role: str, tool_name: str, args: dict[str, Any]) -> None:
    agent = Agent(role=role, goal="do the step", backstory="part of the chain",
                  llm=Scripted(tool_name, args),
                  tools=[delegate, read_customer_data, send_email], max_iter=3)
    task = Task(description=f"use {tool_name}", expected_output="the tool's answer",
                agent=agent)
    print(f"  agent read: {Crew(agents=[agent], tasks=[task]).kickoff().raw}")


def reviewer(server: Server, proctor: ProctorClient, decided: list[str]) -> None:
    """Approve B's read of customer data, deny C's email (in the order they come)."""
    from proctor.v1 import approvals_pb2, approvals_pb2_grpc

    stub = approvals_pb2_grpc.ApprovalsStub(proctor.channel)
    plan = {"job.42.read.customer-data": ("approve", "ticket SUP-7 needs the record"),
            "job.42.send.email": ("deny", "customer data does not leave by email")}
    while plan:
        pending = stub.ListApprovals(approvals_pb2.ListApprovalsRequest(
            status=approvals_pb2.APPROVAL_STATUS_PENDING), timeout=5).approvals
        for a in pending:
            if a.topic in plan:
                print(f"  waiting: {a.topic} by {' > '.join(a.delegation_path)} needs "
                      f"approval {a.approval_id} ({a.reason})")
                verb, why = plan.pop(a.topic)
                review(server, verb, a.approval_id, why)
                decided.append(a.decision_id)
        time.sleep(0.1)


def main() -> None:
    with server_from_args(__doc__ or "") as server, ProctorClient(server.address) as proctor:
        decided: list[str] = []
        desk = threading.Thread(target=reviewer, args=(server, proctor, decided), daemon=True)
        desk.start()
        hooks = ProctorCrewHooks(proctor, rules=RULES, run_id=RUN_ID, approval_wait=60)
        with hooks, delegation("A"):
            print("A delegates to B")
            run_crew("A", "delegate", {"to": "B", "task": "find Jane"})
            with delegation("B"):
                print("B reads customer data")
                run_crew("B", "read_customer_data", {"customer": "jane"})
                print("C tries to send email")
                run_crew("C", "send_email", {"to": "jane@example.com", "body": "your data"})
        desk.join(timeout=10)
        show_envelope(server, decided[-1])


if __name__ == "__main__":
    main()
