"""The one tool-call -> request mapping every integration shares (no server)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor import engine
from proctor.client.integrations.mapping import (
    ToolCall,
    ToolMapping,
    ToolRule,
    labels_of,
    request_id_for,
)

TOPIC = re.compile(r"[A-Za-z0-9_:\-]{1,64}(?:\.[A-Za-z0-9_:\-]{1,64}){0,31}")


def reference_labels(args: dict[Any, Any]) -> dict[str, str]:
    """Plainly: scalar arguments in order, skipping any over a limit, at most 32."""
    out: dict[str, str] = {}
    for k, v in args.items():
        if len(out) == 32:
            break
        if not isinstance(k, str) or not k or len(k) > 64:
            continue
        if isinstance(v, bool):
            text = "true" if v else "false"
        elif isinstance(v, str):
            text = v
        elif isinstance(v, int):
            text = str(v)
        elif isinstance(v, float):
            text = repr(v)
        else:
            continue
        if len(text) <= 256:
            out[k] = text
    return out


scalars = st.one_of(st.text(min_size=250, max_size=260) | st.text(max_size=8), st.integers(),
                    st.booleans(), st.floats(allow_nan=False), st.none(),
                    st.lists(st.integers(), max_size=2))
arguments = st.dictionaries(st.text(min_size=60, max_size=70) | st.text(max_size=4), scalars,
                            max_size=40)


@given(arguments)
def test_labels_match_the_reference_and_always_pass_the_engine(args: dict[str, Any]) -> None:
    labels = labels_of(args)
    assert labels == reference_labels(args)
    # the engine's own validation accepts whatever the mapping sends
    engine.Request(topic="tool.x", delegation_path=["a"], labels=labels)


def test_labels_keep_only_named_arguments() -> None:
    args = {"to": "a@b.c", "body": "secret", "n": 3}
    assert labels_of(args, ["to", "n"]) == {"to": "a@b.c", "n": "3"}
    assert labels_of(args, []) == {}


def test_topic_templates_default_per_tool_and_fields() -> None:
    m = ToolMapping(tools={"send_email": ToolRule(topic="job.{run_id}.send.email"),
                           "mine": ToolRule(topic="agent.{agent}.{tool_name}.{tenant}")},
                    tenant="acme")
    path = ("planner", "mail bot")
    assert m.request(ToolCall("search"), delegation_path=path).topic == "tool.search"
    assert m.request(ToolCall("send_email"), delegation_path=path,
                     run_id="42").topic == "job.42.send.email"
    assert m.request(ToolCall("mine"), delegation_path=path).topic == "agent.mail_bot.mine.acme"


@given(st.text(max_size=100))
def test_any_tool_name_makes_a_valid_topic(name: str) -> None:
    topic = ToolMapping().request(ToolCall(name), delegation_path=("a",)).topic
    if len(topic.encode()) <= 256:
        assert TOPIC.fullmatch(topic), topic


def test_unknown_template_fields_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        ToolMapping(topic="tool.{name}")
    with pytest.raises(ValueError, match="unknown field"):
        ToolMapping(tools={"x": ToolRule(topic="{tool_name!r}")})


def test_tags_from_declaration_rule_and_table_merged_never_cut() -> None:
    m = ToolMapping(tools={"export": ToolRule(risk_tags=["PII", "bulk"])},
                    risk_tags={"export": ["external", " pii "]})
    r = m.request(ToolCall("export", declared_tags=["pii", ""]), delegation_path=("a",))
    assert r.risk_tags == ("pii", "bulk", "external")
    many = [f"t{i}" for i in range(100)]
    assert len(ToolMapping().request(ToolCall("x", declared_tags=many),
                                     delegation_path=("a",)).risk_tags) == 100


def test_request_ids_are_scoped_stable_and_bounded() -> None:
    assert request_id_for("call_1", "lg:thread-9") == "lg:thread-9:call_1"
    assert request_id_for("call_1") == "call_1"
    assert request_id_for("") == ""
    long = request_id_for("c" * 200, "scope")
    assert long == request_id_for("c" * 200, "scope") and len(long) <= 128
    assert long != request_id_for("c" * 199 + "d", "scope")
