"""ProctorToolNode in real LangGraph graphs (checkpointed, a scripted model node) against a
live `proctor serve`; reviewers decide through the real `proctor approvals` CLI."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import tools_condition
from langgraph.types import Command
from pydantic import create_model
from typing_extensions import TypedDict

from proctor.client import ProctorClient, delegation, delegation_path
from proctor.client.integrations import ToolRule
from proctor.client.integrations.langgraph import ProctorToolNode
from tests.support.proctor import ProctorProcess

from .conftest import Ledger, approvals_of, reviewer


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


class ScriptedModel:
    """A model node that emits fixed tool calls, one message per turn, then "done". Its turn
    is read from the state (the AI messages so far), so a re-executed node says the same."""

    def __init__(self, *turns: Sequence[dict[str, Any]]) -> None:
        self.turns = [list(t) for t in turns]
        self.seen: list[list[AnyMessage]] = []

    def __call__(self, state: State) -> dict[str, list[AnyMessage]]:
        self.seen.append(list(state["messages"]))
        n = sum(isinstance(m, AIMessage) for m in state["messages"])
        if n < len(self.turns):
            return {"messages": [AIMessage("", tool_calls=self.turns[n])]}
        return {"messages": [AIMessage("done")]}

    def tool_messages(self) -> dict[str, ToolMessage]:
        """The tool results the model received last, by tool-call id."""
        return {m.tool_call_id: m for m in self.seen[-1] if isinstance(m, ToolMessage)}


def call(name: str, call_id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def make_tools(ledger: Ledger) -> list[BaseTool]:
    @tool
    def search(q: str) -> str:
        """Search the web."""
        ledger.record("search", q=q)
        return f"results for {q}"

    @tool
    def delete_all() -> str:
        """Delete everything."""
        ledger.record("delete_all")
        return "deleted"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        ledger.record("send_email", to=to, body=body)
        return f"sent to {to}"

    @tool
    def flaky() -> str:
        """Always fails."""
        ledger.record("flaky")
        raise RuntimeError("the tool broke")

    @tool
    def whoami() -> str:
        """Report the delegation path the tool runs under."""
        ledger.record("whoami", path=delegation_path())
        return ">".join(delegation_path())

    export = StructuredTool.from_function(
        lambda table: ledger.record("export", table=table) or "exported", name="export",
        description="Export a table.", metadata={"risk_tags": ["pii"]})
    fields: dict[str, Any] = {f"field_{i:02d}": (str, ...) for i in range(40)}
    wide = StructuredTool.from_function(
        lambda **kw: ledger.record("wide", n=len(kw)) or "ok", name="wide",
        description="Takes many arguments.", args_schema=create_model("Wide", **fields))
    return [search, delete_all, send_email, flaky, whoami, export, wide]


def build(node: ProctorToolNode, model: ScriptedModel) -> Any:
    g = StateGraph(State)
    g.add_node("model", model)
    g.add_node("tools", node)
    g.add_edge(START, "model")
    g.add_conditional_edges("model", tools_condition, {"tools": "tools", END: END})
    g.add_edge("tools", "model")
    return g.compile(checkpointer=InMemorySaver())


def config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def interrupts(out: dict[str, Any]) -> list[dict[str, Any]]:
    return [i.value for i in out.get("__interrupt__", ())]


def test_allow_runs_and_deny_never_runs_and_the_model_reads_the_reason(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([call("search", "c1", q="cats"), call("delete_all", "c2")])
    graph = build(ProctorToolNode(make_tools(ledger), client=client, agent="B"), model)
    out = graph.invoke({"messages": [("user", "go")]}, config(run_id))
    assert out["messages"][-1].content == "done"
    assert ledger.runs == [("search", {"q": "cats"})]
    seen = model.tool_messages()
    assert seen["c1"].content == "results for cats"
    assert seen["c2"].status == "error"
    assert "Deleting everything is never allowed" in seen["c2"].content
    assert seen["c2"].artifact["proctor"]["rule_id"] == "deny-delete"


def test_require_approval_pauses_and_resumes_into_exactly_one_run(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    # An allowed call and a call needing approval in one message: nothing runs until both
    # have their answer, so the node's re-executions never run the search twice.
    model = ScriptedModel([call("search", "c1", q="news"),
                           call("send_email", "c2", to="ceo@example.com", body="hi")])
    node = ProctorToolNode(make_tools(ledger), client=client, agent="mailer")
    graph = build(node, model)
    with delegation("planner"), delegation("writer"):
        out = graph.invoke({"messages": [("user", "go")]}, config(run_id))
        [payload] = interrupts(out)
        assert ledger.runs == []
        approval_id = payload["approval_id"]
        assert approval_id.startswith("apv_")
        assert payload["delegation_path"] == ["planner", "writer", "mailer"]
        assert payload["topic"] == "tool.send_email"
        assert (payload["rule_id"], payload["reason"]) == ("approve-email",
                                                           "Emails leave the company")
        assert payload["policy_version"] and payload["decision_id"]
        assert payload["labels"] == {"to": "ceo@example.com", "body": "hi"}
        assert payload["envelope"]["approval"]["status"] == "pending"

        # resumed while still pending: the node runs again, finds the same approval (same
        # request_id), and pauses again
        out = graph.invoke(Command(resume="any value"), config(run_id))
        assert [p["approval_id"] for p in interrupts(out)] == [approval_id]
        assert ledger.runs == []
        assert [a.approval_id for a in approvals_of(client, run_id)] == [approval_id]

        reviewer(server, "approve", approval_id, "fine")
        out = graph.invoke(Command(resume=True), config(run_id))
        assert not interrupts(out)
        assert out["messages"][-1].content == "done"
        assert ledger.count("search") == 1 and ledger.count("send_email") == 1
        assert model.tool_messages()["c2"].content == "sent to ceo@example.com"
        # the grant was used once; nothing left to run
        graph.invoke(Command(resume=True), config(run_id))
        assert ledger.count("send_email") == 1
    [a] = approvals_of(client, run_id)
    assert (a.status, a.reviewer, a.delegation_path) == (
        "consumed", "dana", ("planner", "writer", "mailer"))


def test_a_reviewers_denial_reaches_the_model_and_the_tool_never_runs(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([call("export", "c1", table="customers")])
    graph = build(ProctorToolNode(make_tools(ledger), client=client, agent="etl"), model)
    out = graph.invoke({"messages": [("user", "go")]}, config(run_id))
    [payload] = interrupts(out)
    assert payload["risk_tags"] == ["pii"]  # from the tool's metadata
    reviewer(server, "deny", payload["approval_id"], "not the whole customer table")
    out = graph.invoke(Command(resume="checked"), config(run_id))
    assert out["messages"][-1].content == "done"
    assert ledger.runs == []
    text = model.tool_messages()["c1"].content
    assert "not the whole customer table" in text and "dana" in text


def test_several_pending_calls_pause_one_after_another(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([call("send_email", "c1", to="a@x.io", body="1"),
                           call("send_email", "c2", to="b@x.io", body="2")])
    graph = build(ProctorToolNode(make_tools(ledger), client=client, agent="m"), model)
    first = interrupts(graph.invoke({"messages": [("user", "go")]}, config(run_id)))
    assert [p["tool_call_id"] for p in first] == ["c1"]
    reviewer(server, "approve", first[0]["approval_id"])
    second = interrupts(graph.invoke(Command(resume=1), config(run_id)))
    assert [p["tool_call_id"] for p in second] == ["c2"]
    assert ledger.runs == []
    reviewer(server, "deny", second[0]["approval_id"], "wrong address")
    out = graph.invoke(Command(resume=2), config(run_id))
    assert out["messages"][-1].content == "done"
    assert ledger.runs == [("send_email", {"to": "a@x.io", "body": "1"})]
    assert "wrong address" in model.tool_messages()["c2"].content


def test_async_graphs_are_governed_the_same_way(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([call("search", "c1", q="x"), call("delete_all", "c2"),
                           call("send_email", "c3", to="z@x.io", body="b")])
    graph = build(ProctorToolNode(make_tools(ledger), client=client, agent="A"), model)

    async def main() -> None:
        out = await graph.ainvoke({"messages": [("user", "go")]}, config(run_id))
        [payload] = interrupts(out)
        await asyncio.to_thread(reviewer, server, "approve", payload["approval_id"])
        out = await graph.ainvoke(Command(resume=True), config(run_id))
        assert out["messages"][-1].content == "done"

    asyncio.run(main())
    assert sorted(n for n, _ in ledger.runs) == ["search", "send_email"]
    assert "never allowed" in model.tool_messages()["c2"].content


def test_tools_run_under_their_calls_delegation_path(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    model = ScriptedModel([call("whoami", "c1")])
    graph = build(ProctorToolNode(make_tools(ledger), client=client, agent="B"), model)
    with delegation("A"):
        graph.invoke({"messages": [("user", "go")]}, config(run_id))
    assert ledger.runs == [("whoami", {"path": ("A", "B")})]


def test_budgets_are_reserved_around_the_tool_and_a_refusal_stops_it(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    def used() -> tuple[int, int]:
        [b] = client.budget("run-tool-calls", run_id=run_id)
        return b.used, b.reserved

    node = ProctorToolNode(make_tools(ledger), client=client, agent="A", run_id=run_id,
                           budget_unit="tool_calls", handle_tool_errors=True)
    model = ScriptedModel([call("search", "c1", q="1")], [call("flaky", "c2")],
                          [call("search", "c3", q="2")], [call("search", "c4", q="3")])
    build(node, model).invoke({"messages": [("user", "go")]}, config(run_id))
    # c1 committed; c2 failed and was released; c3 committed; c4 found the limit of 2 spent
    assert used() == (2, 0)
    assert [n for n, _ in ledger.runs] == ["search", "flaky", "search"]
    refused = model.tool_messages()["c4"]
    assert refused.status == "error" and "run-tool-calls" in refused.content

    # a unit the policy has no budget for reserves nothing and the tool runs
    ledger.runs.clear()
    free = ProctorToolNode(make_tools(ledger), client=client, agent="A", run_id=run_id,
                           budget_unit="unbudgeted_unit")
    build(free, ScriptedModel([call("search", "c5", q="4")])).invoke(
        {"messages": [("user", "go")]}, config(run_id + "-b"))
    assert ledger.count("search") == 1 and used() == (2, 0)


def test_labels_are_cut_to_the_limits_without_error(
    client: ProctorClient, ledger: Ledger, run_id: str,
) -> None:
    args = {f"field_{i:02d}": ("v" * 300 if i % 5 == 0 else f"value {i}") for i in range(40)}
    # routed to the require_approval topic, so the server's record of the labels is visible
    node = ProctorToolNode(make_tools(ledger), client=client, agent="A",
                           rules={"wide": ToolRule(topic="tool.send_email")})
    out = build(node, ScriptedModel([call("wide", "c1", **args)])).invoke(
        {"messages": [("user", "go")]}, config(run_id))
    [payload] = interrupts(out)
    labels = payload["labels"]
    assert len(labels) == 32 and all(len(v) <= 256 for v in labels.values())
    assert "field_00" not in labels and labels["field_01"] == "value 1"
    # allowed under its own topic: it runs, with every one of its 40 arguments
    allowed = ProctorToolNode(make_tools(ledger), client=client, agent="A")
    build(allowed, ScriptedModel([call("wide", "c2", **args)])).invoke(
        {"messages": [("user", "go")]}, config(run_id + "-b"))
    assert ledger.runs == [("wide", {"n": 40})]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_fail_closed_when_the_server_is_down(
    dead_client: ProctorClient, ledger: Ledger, run_id: str, mode: str,
) -> None:
    model = ScriptedModel([call("search", "c1", q="x")])
    graph = build(ProctorToolNode(make_tools(ledger), client=dead_client, agent="A"), model)
    start = {"messages": [("user", "go")]}
    if mode == "sync":
        out = graph.invoke(start, config(run_id))
    else:
        out = asyncio.run(graph.ainvoke(start, config(run_id)))
    assert out["messages"][-1].content == "done"
    assert ledger.runs == []
    refused = model.tool_messages()["c1"]
    assert refused.status == "error" and "UNAVAILABLE" in refused.content
