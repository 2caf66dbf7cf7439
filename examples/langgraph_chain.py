"""The seed's accountability chain in LangGraph, governed by ProctorToolNode.

A (planner) delegates to B (researcher); B reads customer data, which needs a reviewer's
approval; B hands over to C (mailer), who tries to email the data out, and the reviewer
denies it. Every model is scripted (no network LLM); the graphs pause with LangGraph's own
interrupt() and resume with Command(resume=...). At the end: the audit envelope of C's
attempt. Run: python examples/langgraph_chain.py  (needs 'proctor-client[langgraph]').
"""

from __future__ import annotations

from typing import Annotated, Any

from chain_support import RUN_ID, Server, review, server_from_args, show_envelope
from langchain_core.messages import AIMessage, AnyMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import tools_condition
from langgraph.types import Command
from typing_extensions import TypedDict

from proctor.client import ProctorClient, delegation
from proctor.client.integrations import ToolRule
from proctor.client.integrations.langgraph import ProctorToolNode

# The seed policy's topics and tags, per tool.
RULES = {
    "delegate": ToolRule(topic="job.{run_id}.delegate.internal"),
    "read_customer_data": ToolRule(topic="job.{run_id}.read.customer-data",
                                   risk_tags=["customer-data", "pii"]),
    "send_email": ToolRule(topic="job.{run_id}.send.email", risk_tags=["external"]),
}


@tool
def delegate(to: str, task: str) -> str:
    """Hand a task to another agent of the fleet."""
    return f"{to} accepted: {task}"


@tool
def read_customer_data(customer: str) -> str:
    """Read a customer's record."""
    return f"{customer}: jane@example.com, 3 open orders"


@tool
def send_email(to: str, body: str) -> str:
    """Send an email outside the company."""
    return f"sent to {to}"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def scripted(name: str, args: dict[str, Any]) -> Any:
    """A model node that calls one tool, then reports what the tool answered."""
    def model(state: State) -> dict[str, list[AnyMessage]]:
        if not any(isinstance(m, AIMessage) for m in state["messages"]):
            call = {"name": name, "args": args, "id": f"call-{name}", "type": "tool_call"}
            return {"messages": [AIMessage("", tool_calls=[call])]}
        return {"messages": [AIMessage(f"{name}: {state['messages'][-1].content}")]}
    return model


def agent_graph(proctor: ProctorClient, name: str, args: dict[str, Any]) -> Any:
    g = StateGraph(State)
    g.add_node("model", scripted(name, args))
    g.add_node("tools", ProctorToolNode([delegate, read_customer_data, send_email],
                                        client=proctor, rules=RULES, run_id=RUN_ID))
    g.add_edge(START, "model")
    g.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "model")
    return g.compile(checkpointer=InMemorySaver())


def run(server: Server, graph: Any, thread: str, verdict: str, why: str) -> str:
    """Run an agent's graph; on an interrupt, the reviewer decides and the graph resumes.
    Returns the decision id of the last interrupt (or "")."""
    config = {"configurable": {"thread_id": thread}}
    out = graph.invoke({"messages": [("user", "go")]}, config)
    decision_id = ""
    while out.get("__interrupt__"):
        payload = out["__interrupt__"][0].value
        decision_id = payload["decision_id"]
        print(f"  paused: {payload['tool']} by {' > '.join(payload['delegation_path'])} "
              f"needs approval {payload['approval_id']} ({payload['reason']})")
        review(server, verdict, payload["approval_id"], why)
        out = graph.invoke(Command(resume=True), config)
    print(f"  model read: {out['messages'][-1].content}")
    return decision_id


def main() -> None:
    with server_from_args(__doc__ or "") as server, ProctorClient(server.address) as proctor:
        with delegation("A"):
            print("A delegates to B")
            run(server, agent_graph(proctor, "delegate", {"to": "B", "task": "find Jane"}),
                "a", "approve", "")
            with delegation("B"):
                print("B reads customer data")
                run(server, agent_graph(proctor, "read_customer_data", {"customer": "jane"}),
                    "b", "approve", "ticket SUP-7 needs the record")
                with delegation("C"):
                    print("C tries to send email")
                    decision_id = run(
                        server, agent_graph(proctor, "send_email",
                                            {"to": "jane@example.com", "body": "your data"}),
                        "c", "deny", "customer data does not leave by email")
        show_envelope(server, decision_id)


if __name__ == "__main__":
    main()
