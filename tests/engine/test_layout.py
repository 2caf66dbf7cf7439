"""The evaluated automaton is a relocated copy: same answers, shared parts, no builder left."""

from __future__ import annotations

import random

import pytest
import yaml

import proctor.engine.compiler as compiler
from proctor.engine import Request, compile_policy
from tests.engine.generators import random_policy, random_request

POLICY = """\
version: v1
derive_tags:
  - topics: ["job.*.send.*"]
    add: [external]
rules:
  - id: a
    match: {topics: ["job.*.send.mail"], agents: ["etl-*"], tenants: [acme]}
    decision: deny
    reason: "not by mail"
  - id: b
    match: {topics: ["job.*.send.*"], agents: ["etl-*"], tenants: [acme]}
    decision: allow
  - id: c
    match: {topics: ["**.mail", "job.*.**.sms"], risk_tags: [pii]}
    decision: require_approval
    reason: check
  - id: d
    match: {topics: ["job.**"]}
    decision: allow
"""


def test_relocated_automaton_drops_the_builder_and_keeps_counts() -> None:
    p = compile_policy(POLICY)
    auto = p._auto
    assert auto.complete
    assert not auto.states and not auto.lit and not auto.node_rules and not auto.merged
    assert auto.counts["automaton_states"] > 0 and auto.counts["terminal_nodes"] == 5
    assert p._start is auto.start
    d = p.evaluate(Request(topic="job.1.send.mail", delegation_path=["etl-1"], tenant="acme"))
    assert (d.rule_id, d.derived_tags) == ("a", ("external",))
    assert (
        p.evaluate(Request(topic="x.mail", risk_tags=["PII"], delegation_path=["x"])).rule_id == "c"
    )
    assert (
        p.evaluate(Request(topic="job.1.a.b.sms", risk_tags=["pii"], delegation_path=["x"])).rule_id
        == "c"
    )
    assert p.evaluate(Request(topic="job.1.a.b.sms", delegation_path=["x"])).rule_id == "d"


def test_equal_conditions_share_one_object() -> None:
    auto = compile_policy(POLICY)._auto
    assert auto.conditions[0] is auto.conditions[1]
    assert auto.conditions[2] is None


def test_shared_decisions_are_the_rules_own() -> None:
    p = compile_policy(POLICY)
    d = p.evaluate(Request(topic="job.1.do", delegation_path=["x"]))
    assert d is p._decisions[3]


@pytest.mark.parametrize("seed", range(6))
def test_relocated_and_partly_built_automata_agree(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    r = random.Random(seed)
    pol = random_policy(r, 25)
    text = yaml.safe_dump(pol)
    whole = compile_policy(text)
    monkeypatch.setattr(compiler, "EAGER_MIN", 5)
    monkeypatch.setattr(compiler, "EAGER_FACTOR", 0)
    partial = compile_policy(text)
    assert whole._auto.complete and not partial._auto.complete
    for _ in range(60):
        rq = Request(**random_request(r, pol))
        for explain in (False, True):
            assert whole.evaluate(rq, explain) == partial.evaluate(rq, explain)
