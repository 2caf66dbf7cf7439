"""What a governed tool call costs: LangGraph's ToolNode against ProctorToolNode.

    python benchmarks/integration_bench.py [--calls 500] [--rounds 5] [--out FILE.json]

Starts `proctor serve` on a one-rule policy (tool.echo allowed; budgets of unit
tool_calls for the budgeted mode) on a free loopback port, then runs one tool call at a
time through a bare ToolNode, through ProctorToolNode (one Evaluate), and through
ProctorToolNode with a budget unit (Evaluate, ReserveBudget, CommitBudget), alternating
the modes every round. Prints per-call p50/p90 in microseconds and the added cost over
ToolNode; writes JSON to --out (default: integration-<time>.json in the results directory,
never the checkout; benchmarks/baselines/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from proctor.bench.results import save_result
from proctor.client import ProctorClient, delegation
from proctor.client.integrations.langgraph import ProctorToolNode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.proctor import start_proctor  # noqa: E402

POLICY = """\
version: v1
rules:
  - {id: allow-echo, match: {topics: ["tool.echo"]}, decision: allow, reason: "fine"}
budgets:
  - {id: calls, unit: tool_calls, limit: 1000000000, window: none, scope: fleet}
"""


@tool
def echo(text: str) -> str:
    """Echo."""
    return text


def graph_of(node: Any) -> Any:
    """The node alone in a graph (a ToolNode needs a graph's runtime)."""
    g = StateGraph(MessagesState)
    g.add_node("tools", node)
    g.add_edge(START, "tools")
    g.add_edge("tools", END)
    return g.compile()


def per_call(graph: Any, calls: int) -> list[float]:
    out = []
    for i in range(calls):
        msg = AIMessage("", tool_calls=[{"name": "echo", "args": {"text": "x"},
                                         "id": f"c{i}", "type": "tool_call"}])
        t = time.perf_counter()
        graph.invoke({"messages": [msg]})
        out.append((time.perf_counter() - t) * 1e6)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        server = start_proctor(policy, Path(tmp) / "srv")
        try:
            with ProctorClient(server.address) as client, delegation("bench"):
                modes = {
                    "toolnode": graph_of(ToolNode([echo])),
                    "proctor": graph_of(ProctorToolNode([echo], client=client)),
                    "proctor+budget": graph_of(ProctorToolNode(
                        [echo], client=client, budget_unit="tool_calls")),
                }
                samples: dict[str, list[float]] = {m: [] for m in modes}
                for node in modes.values():
                    per_call(node, 50)  # warm up
                for r in range(args.rounds):
                    order = list(modes)[r % 3:] + list(modes)[:r % 3]
                    for m in order:
                        samples[m] += per_call(modes[m], args.calls)
        finally:
            server.stop()
    result: dict[str, Any] = {}
    base = statistics.median(samples["toolnode"])
    for m, xs in samples.items():
        xs.sort()
        p50, p90 = statistics.median(xs), xs[int(len(xs) * 0.9)]
        result[m] = {"p50_us": round(p50, 1), "p90_us": round(p90, 1),
                     "added_p50_us": round(p50 - base, 1), "calls": len(xs)}
        print(f"{m:16s} p50 {p50:8.1f} us  p90 {p90:8.1f} us  added {p50 - base:8.1f} us")
    out = save_result(result, args.out, "integration")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
