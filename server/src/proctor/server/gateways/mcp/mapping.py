"""One MCP tool call -> one Proctor request: topic, labels, risk tags.

The same rules as the SDK's framework integrations (DESIGN section 13; branch
`integrations`, proctor.client.integrations.mapping), kept here until the two
can share one module:

- topic: `--topic-template` (default `mcp.{name}.{tool}`) with `{name}` (the
  gateway's `--name`, one segment) and `{tool}` (the tool's name; a dot keeps
  its meaning, a separator) made valid topic pieces (gateways/topics.py).
- labels: the call's scalar arguments (str, int, float, bool) as strings,
  within the engine's limits: at most 32 labels, keys 1..64 and values up to
  256 characters. An argument over a limit (or not a scalar: a list, an
  object, null) is left out, never an error: the tool still runs if the policy
  allows it without that label. Arguments are taken in the order the caller
  sent them, so the first 32 that fit are kept.
- risk tags: `--risk-tag` (every call) and `--tool-risk-tags TOOL=TAG,TAG`
  (one tool's calls), trimmed and de-duplicated. Tags are never cut: a tag
  over the engine's limits makes the request invalid and the call is refused
  (dropping a tag could dodge a rule).
- request_id: empty. An MCP request id is only unique within one connection
  (every client starts at 1), so it cannot be an idempotency key; the gateway
  keeps the approvals it asked for itself (governor.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..topics import TopicTemplate, segment, segments

DEFAULT_TOPIC_TEMPLATE = "mcp.{name}.{tool}"
TEMPLATE_FIELDS = ("name", "tool")

# The engine's request limits (DESIGN section 2).
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256


def scalar_text(value: object) -> str | None:
    """A scalar argument's label value; None for anything else (None, lists, objects)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return None


def labels_of(arguments: Mapping[str, Any] | None) -> dict[str, str]:
    """The arguments as labels, within the label limits (see the module docstring)."""
    out: dict[str, str] = {}
    for key, value in (arguments or {}).items():
        if len(out) >= MAX_LABELS:
            break
        if not isinstance(key, str) or not 0 < len(key) <= MAX_LABEL_KEY_CHARS:
            continue
        text = scalar_text(value)
        if text is None or len(text) > MAX_LABEL_VALUE_CHARS:
            continue
        out[key] = text
    return out


def merge_tags(*groups: Iterable[str]) -> tuple[str, ...]:
    """Tags in first-seen order, trimmed, without empties and duplicates (case-insensitive,
    as the engine compares them)."""
    seen: set[str] = set()
    out: list[str] = []
    for group in groups:
        for tag in group:
            text = tag.strip()
            if text and text.lower() not in seen:
                seen.add(text.lower())
                out.append(text)
    return tuple(out)


class ToolMapping:
    """Tool name and arguments -> topic, labels and risk tags."""

    def __init__(self, name: str, template: str = DEFAULT_TOPIC_TEMPLATE,
                 risk_tags: Iterable[str] = (),
                 tool_risk_tags: Mapping[str, Iterable[str]] | None = None) -> None:
        self.name = name
        self.template = TopicTemplate(template, TEMPLATE_FIELDS, "--topic-template")
        self.risk_tags = merge_tags(risk_tags)
        self.tool_risk_tags = {tool: merge_tags(tags)
                               for tool, tags in (tool_risk_tags or {}).items()}

    def topic(self, tool: str) -> str:
        return self.template.render(name=segment(self.name), tool=segments(tool))

    def tags(self, tool: str) -> tuple[str, ...]:
        return merge_tags(self.risk_tags, self.tool_risk_tags.get(tool, ()))
