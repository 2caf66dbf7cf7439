"""Framework integrations: Proctor decides every tool call an agent framework makes.

One mapping (`mapping.ToolMapping`) turns a tool call into a request the same way for
every framework, and one governor (`governor.ToolGovernor`) decides, waits on reviewers
and holds budgets around the call. Each framework has a module, importable only with its
extra installed:

- `proctor.client.integrations.langgraph`: `ProctorToolNode`, a drop-in for ToolNode
  (`pip install 'proctor-client[langgraph]'`);
- `proctor.client.integrations.openai_agents`: a tool input guardrail and a
  `needs_approval` hook (`pip install 'proctor-client[openai-agents]'`);
- `proctor.client.integrations.crewai`: before/after tool-call hooks
  (`pip install 'proctor-client[crewai]'`).
"""

from .governor import ToolGovernor, ToolRefused, Verdict
from .mapping import DEFAULT_TOPIC, ToolCall, ToolMapping, ToolRule

__all__ = [
    "DEFAULT_TOPIC",
    "ToolCall",
    "ToolGovernor",
    "ToolMapping",
    "ToolRefused",
    "ToolRule",
    "Verdict",
]
