"""One mapping from a framework's tool call to a Proctor request, shared by every integration.

    mapping = ToolMapping(
        topic="tool.{tool_name}",                        # the default template
        tools={"send_email": ToolRule(topic="job.{run_id}.send.email", risk_tags=["external"])},
        risk_tags={"read_customer": ["pii"]},            # a per-tool tag table
    )
    request = mapping.request(ToolCall("send_email", {"to": "a@b.c"}, call_id="call_1"),
                              delegation_path=("planner", "mailer"), run_id="42")

- topic: the tool's `ToolRule.topic` or the mapping's template, with `{tool_name}`,
  `{agent}` (the acting agent), `{run_id}` and `{tenant}` filled in. Each value is made a
  valid piece of a topic: characters outside `[A-Za-z0-9_:.-]` become `_` and an empty
  value or segment becomes `_` (a dot in a tool name keeps its meaning: a segment).
- labels: the call's scalar arguments (str, int, float, bool) as strings, or only those
  `ToolRule.labels` names (`()` sends none, for tools whose arguments are secret). Within
  the engine's limits: at most 32 labels, keys 1..64 and values up to 256 characters;
  an argument over a limit is left out, never an error.
- risk tags: the tool's declared tags, its `ToolRule.risk_tags` and the `risk_tags`
  table, together. Tags are never cut: a tag over the engine's limits makes the request
  invalid and the call is refused (dropping a tag could dodge a rule).
- request_id: the framework's tool-call id, prefixed by a scope (the LangGraph thread, the
  run) so that one model's reused ids do not meet across runs; hashed when over 128
  characters. A retried or re-executed step sends the same id and finds the same approval.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..results import EvaluationRequest

DEFAULT_TOPIC = "tool.{tool_name}"
TEMPLATE_FIELDS = ("tool_name", "agent", "run_id", "tenant")

# The engine's request limits (DESIGN section 2).
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 64
MAX_LABEL_VALUE_CHARS = 256
MAX_ID_CHARS = 128
MAX_SEGMENT_CHARS = 64

_NOT_TOPIC = re.compile(r"[^A-Za-z0-9_:.\-]")


@dataclass(frozen=True, slots=True)
class ToolRule:
    """How one tool's calls map to requests; every field optional."""

    topic: str | None = None                  # a template, as ToolMapping's `topic`
    risk_tags: Sequence[str] = ()             # added to the tool's declared tags
    labels: Sequence[str] | None = None       # argument names sent as labels; None: all scalars
    budget_amount: int | None = None          # reserved per call (None: the governor's default)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A framework's tool call, as the mapping sees it."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    call_id: str = ""
    declared_tags: Sequence[str] = ()


def check_template(template: str) -> str:
    """`template` when its fields are all known; ValueError naming the unknown one."""
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conv:
            raise ValueError(f"topic template {template!r}: unknown field {{{name}}} "
                             f"(known: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)})")
    return template


def topic_piece(value: str) -> str:
    """`value` as one or more topic segments (see the module docstring)."""
    segments = _NOT_TOPIC.sub("_", value).split(".")
    return ".".join((s or "_")[:MAX_SEGMENT_CHARS] for s in segments)


def scalar_text(value: object) -> str | None:
    """A scalar argument's label value; None for anything else (None, lists, dicts...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(int(value))
    return None


def labels_of(args: Mapping[str, Any], names: Iterable[str] | None = None) -> dict[str, str]:
    """The arguments as labels, within the label limits (see the module docstring)."""
    wanted = None if names is None else set(names)
    out: dict[str, str] = {}
    for key, value in args.items():
        if len(out) >= MAX_LABELS:
            break
        if wanted is not None and key not in wanted:
            continue
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
            text = str(tag).strip()
            if text and text.lower() not in seen:
                seen.add(text.lower())
                out.append(text)
    return tuple(out)


def request_id_for(call_id: str, scope: str = "") -> str:
    """The request_id of a tool call: `scope:call_id`, hashed when over 128 characters;
    empty when the framework gave no call id (no idempotency then)."""
    if not call_id:
        return ""
    raw = f"{scope}:{call_id}" if scope else call_id
    if len(raw) <= MAX_ID_CHARS:
        return raw
    return "sha256:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


class ToolMapping:
    """Tool call -> EvaluationRequest; see the module docstring for each field."""

    def __init__(
        self,
        *,
        topic: str = DEFAULT_TOPIC,
        tools: Mapping[str, ToolRule] | None = None,
        risk_tags: Mapping[str, Sequence[str]] | None = None,
        tenant: str = "",
    ) -> None:
        self.topic = check_template(topic)
        self.tools = dict(tools or {})
        for name, rule in self.tools.items():
            if not isinstance(rule, ToolRule):
                raise TypeError(f"tools[{name!r}]: a ToolRule (got {type(rule).__name__})")
            if rule.topic is not None:
                check_template(rule.topic)
        self.risk_tags = {name: tuple(tags) for name, tags in (risk_tags or {}).items()}
        self.tenant = tenant

    def rule(self, tool_name: str) -> ToolRule:
        return self.tools.get(tool_name) or ToolRule()

    def topic_of(self, call: ToolCall, *, agent: str, run_id: str, tenant: str) -> str:
        template = self.rule(call.name).topic or self.topic
        return template.format(
            tool_name=topic_piece(call.name), agent=topic_piece(agent),
            run_id=topic_piece(run_id), tenant=topic_piece(tenant),
        )

    def request(
        self,
        call: ToolCall,
        *,
        delegation_path: Sequence[str],
        run_id: str = "",
        scope: str = "",
        tenant: str | None = None,
    ) -> EvaluationRequest:
        """The request for `call` made by the last agent of `delegation_path`."""
        rule = self.rule(call.name)
        tenant = self.tenant if tenant is None else tenant
        agent = delegation_path[-1] if delegation_path else ""
        return EvaluationRequest(
            topic=self.topic_of(call, agent=agent, run_id=run_id, tenant=tenant),
            delegation_path=tuple(delegation_path),
            risk_tags=merge_tags(call.declared_tags, rule.risk_tags,
                                 self.risk_tags.get(call.name, ())),
            tenant=tenant,
            run_id=run_id,
            request_id=request_id_for(call.call_id, scope),
            labels=labels_of(call.args, rule.labels),
        )


__all__ = [
    "DEFAULT_TOPIC",
    "ToolCall",
    "ToolMapping",
    "ToolRule",
    "labels_of",
    "request_id_for",
    "topic_piece",
]
