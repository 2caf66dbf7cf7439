"""The CrewAI integration with the real crewai package, a scripted LLM (ReAct text, no
network) and a live `proctor serve`: the before-tool-call hook blocks denied calls, waits
for or refuses calls that need approval, and holds budgets around the calls that run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from .conftest import CREWAI_SKIP_REASON, crewai_available

if not crewai_available():
    pytest.skip(CREWAI_SKIP_REASON, allow_module_level=True)

from crewai import Agent, Crew, Task  # noqa: E402
from crewai.llms.base_llm import BaseLLM  # noqa: E402
from crewai.tools import BaseTool, tool  # noqa: E402

from proctor.client import ProctorClient, delegation  # noqa: E402
from proctor.client.integrations.crewai import ProctorCrewHooks  # noqa: E402
from tests.support.proctor import ProctorProcess  # noqa: E402

from .conftest import Ledger, approvals_of, reviewer, wait_for  # noqa: E402

# crewai warns about its own deprecated attributes on every kickoff
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class ScriptedLLM(BaseLLM):
    """Answers with fixed ReAct steps, one per call, and keeps every prompt it was given."""

    def __init__(self, steps: Sequence[str]) -> None:
        super().__init__(model="scripted")
        self._steps = list(steps)
        self._prompts: list[Any] = []

    def call(self, messages: Any, tools: Any = None, callbacks: Any = None,
             available_functions: Any = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> str:
        self._prompts.append(messages)
        return self._steps.pop(0) if self._steps else "Thought: done\nFinal Answer: done"

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 100_000

    def observations(self) -> list[str]:
        """Every tool result the model read, in order."""
        last = self._prompts[-1]
        # the agent's own turns (the system prompt's format example has an Observation too)
        turns = [m["content"] for m in last if m.get("role") == "assistant"]
        return [part.split("\n")[0] for text in turns
                for part in text.split("Observation: ")[1:]]


def step(tool_name: str, **args: Any) -> str:
    return f"Thought: use {tool_name}\nAction: {tool_name}\nAction Input: {json.dumps(args)}"


def make_tools(ledger: Ledger) -> list[BaseTool]:
    @tool("search")
    def search(q: str) -> str:
        """Search the web."""
        ledger.record("search", q=q)
        return f"results for {q}"

    @tool("delete_all")
    def delete_all(confirm: str) -> str:
        """Delete everything."""
        ledger.record("delete_all")
        return "deleted"

    @tool("send_email")
    def send_email(to: str, body: str) -> str:
        """Send an email."""
        ledger.record("send_email", to=to)
        return f"sent to {to}"

    return [search, delete_all, send_email]


def crew_of(llm: ScriptedLLM, ledger: Ledger) -> tuple[Crew, Task]:
    agent = Agent(role="researcher", goal="answer", backstory="careful", llm=llm,
                  tools=make_tools(ledger), verbose=False, max_iter=6)
    task = Task(description="do the work", expected_output="an answer", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False), task


@pytest.fixture
def hooks_of() -> Iterator[Any]:
    made: list[ProctorCrewHooks] = []

    def make(client: ProctorClient, **kwargs: Any) -> ProctorCrewHooks:
        h = ProctorCrewHooks(client, **kwargs).install()
        made.append(h)
        return h

    yield make
    for h in made:
        h.uninstall()


def test_allow_runs_and_deny_is_blocked_with_the_reason(
    client: ProctorClient, ledger: Ledger, run_id: str, hooks_of: Any,
) -> None:
    hooks_of(client, run_id=run_id)
    llm = ScriptedLLM([step("search", q="cats"), step("delete_all", confirm="yes")])
    crew, _ = crew_of(llm, ledger)
    assert crew.kickoff().raw == "done"
    assert ledger.runs == [("search", {"q": "cats"})]
    seen = llm.observations()
    assert seen[0] == "results for cats"
    assert "Deleting everything is never allowed" in seen[1]


def test_without_a_wait_approval_is_refused_then_the_same_call_finds_its_grant(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
    hooks_of: Any,
) -> None:
    hooks_of(client, run_id=run_id)
    with delegation("planner"):
        llm = ScriptedLLM([step("send_email", to="a@x.io", body="hi")])
        crew, task = crew_of(llm, ledger)
        crew.kickoff()
        assert ledger.runs == []
        [a] = approvals_of(client, run_id)
        assert a.delegation_path == ("planner", "researcher") and a.status == "pending"
        assert a.approval_id in llm.observations()[0]
        reviewer(server, "approve", a.approval_id)
        # the step again, in the same task: same request_id, same approval, one run
        llm._steps = [step("send_email", to="a@x.io", body="hi")]
        crew.kickoff()
    assert ledger.runs == [("send_email", {"to": "a@x.io"})]
    assert [x.status for x in approvals_of(client, run_id)] == ["consumed"]


@pytest.mark.parametrize("verdict", ["approve", "deny"])
def test_the_hook_waits_for_the_reviewer(
    server: ProctorProcess, client: ProctorClient, ledger: Ledger, run_id: str,
    hooks_of: Any, verdict: str,
) -> None:
    hooks_of(client, run_id=run_id, approval_wait=60)

    def review() -> None:
        [a] = wait_for(lambda: approvals_of(client, run_id), "the approval")  # type: ignore[misc]
        reviewer(server, verdict, a.approval_id, "checked by hand")

    t = threading.Thread(target=review)
    t.start()
    llm = ScriptedLLM([step("send_email", to="a@x.io", body="hi")])
    crew_of(llm, ledger)[0].kickoff()
    t.join()
    if verdict == "approve":
        assert ledger.runs == [("send_email", {"to": "a@x.io"})]
        assert llm.observations()[0] == "sent to a@x.io"
    else:
        assert ledger.runs == []
        assert "checked by hand" in llm.observations()[0]


def test_budgets_commit_after_the_call_and_a_refusal_blocks_it(
    client: ProctorClient, ledger: Ledger, run_id: str, hooks_of: Any,
) -> None:
    hooks_of(client, run_id=run_id, budget_unit="tool_calls")
    llm = ScriptedLLM([step("search", q=str(i)) for i in range(3)])
    crew_of(llm, ledger)[0].kickoff()
    assert ledger.count("search") == 2
    assert "run-tool-calls" in llm.observations()[2]
    [b] = client.budget("run-tool-calls", run_id=run_id)
    assert (b.used, b.reserved) == (2, 0)


def test_fail_closed_when_the_server_is_down(
    dead_client: ProctorClient, ledger: Ledger, hooks_of: Any,
) -> None:
    hooks_of(dead_client)
    llm = ScriptedLLM([step("search", q="x")])
    crew_of(llm, ledger)[0].kickoff()
    assert ledger.runs == []
    assert "UNAVAILABLE" in llm.observations()[0]


class ExportTool(BaseTool):
    """A tool that declares its own risk tags (the policy asks approval for pii exports)."""

    name: str = "export"
    description: str = "Export a table."
    risk_tags: list[str] = ["pii"]
    ledger: Any = None

    def _run(self, table: str) -> str:
        self.ledger.record("export", table=table)
        return "exported"


def test_a_tools_declared_risk_tags_reach_the_policy(
    client: ProctorClient, ledger: Ledger, run_id: str, hooks_of: Any,
) -> None:
    hooks_of(client, run_id=run_id)
    llm = ScriptedLLM([step("export", table="customers")])
    agent = Agent(role="etl", goal="g", backstory="b", llm=llm, max_iter=3,
                  tools=[ExportTool(ledger=ledger)])
    Crew(agents=[agent], tasks=[Task(description="d", expected_output="o", agent=agent)]
         ).kickoff()
    assert ledger.runs == []
    # tagged pii, the export matched approve-export (untagged, the default would deny)
    [a] = approvals_of(client, run_id)
    assert (a.topic, a.rule_id) == ("tool.export", "approve-export")
