"""engine/probe.py: `never_allowed` is sound against brute force over tags and labels.

For random policies and requests: whenever `never_allowed` says a topic is never
allowed for a path and tenant, every request of that topic, path and tenant,
with any set of the vocabulary's tags and any choice of its labels, is denied.
And the plain cases it must catch are caught.
"""

from __future__ import annotations

import itertools
import random

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor import engine
from proctor.engine.probe import never_allowed

from .generators import LABELS, TAGS, random_policy, random_request

_TAG_SETS = [list(c) for n in range(len(TAGS) + 1) for c in itertools.combinations(TAGS, n)]
_LABEL_SETS = [
    {k: v for k, v in zip(LABELS, choice, strict=True) if v is not None}
    for choice in itertools.product(*[[None, *values] for values in LABELS.values()])
]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_never_allowed_means_denied_whatever_the_tags_and_labels(seed: int) -> None:
    r = random.Random(seed)
    doc = random_policy(r, r.randint(1, 8))
    policy = engine.compile_policy(yaml.safe_dump(doc))
    req = random_request(r, doc)
    base = engine.Request(topic=req["topic"], delegation_path=req["delegation_path"],
                          tenant=req.get("tenant", ""))
    proof = never_allowed(policy, base)
    if proof is None:
        return
    assert proof.decision == "deny"
    for tags in _TAG_SETS:
        for labels in _LABEL_SETS:
            d = policy.evaluate(engine.Request(
                topic=base.topic, delegation_path=base.delegation_path, tenant=base.tenant,
                risk_tags=tags, labels=labels))
            assert d.decision == "deny", (doc, req, tags, labels, d)


def _policy(rules: str, combining: str = "deny_overrides",
            extra: str = "") -> engine.CompiledPolicy:
    return engine.compile_policy(f"version: v1\ncombining: {combining}\n{extra}rules:\n{rules}")


ALLOW_TAGGED = """\
  - id: allow-tagged
    match: {topics: ["t.x"], risk_tags: [ok]}
    decision: allow
"""
DENY_ALL = """\
  - id: deny-all
    match: {topics: ["t.*"]}
    decision: deny
    reason: never
"""


def _req(topic: str = "t.x", path: tuple[str, ...] = ("a",)) -> engine.Request:
    return engine.Request(topic=topic, delegation_path=path)


def test_an_unconditional_deny_is_never_allowed_under_deny_overrides() -> None:
    proof = never_allowed(_policy(ALLOW_TAGGED + DENY_ALL), _req())
    assert proof is not None and proof.rule_id == "deny-all"


def test_first_match_needs_every_earlier_rule_to_be_a_deny() -> None:
    # An earlier allow that a tag could switch on: possibly allowed.
    assert never_allowed(_policy(ALLOW_TAGGED + DENY_ALL, "first_match"), _req()) is None
    assert never_allowed(_policy(DENY_ALL + ALLOW_TAGGED, "first_match"), _req()) is not None


def test_the_default_deny_leaves_room_for_tags() -> None:
    assert never_allowed(_policy(ALLOW_TAGGED), _req()) is None  # risk_tags [ok] would allow
    assert never_allowed(_policy(ALLOW_TAGGED), _req("t.y")) is None  # only the default


def test_a_deny_that_needs_a_label_or_tag_is_not_never() -> None:
    rules = """\
  - id: deny-prod
    match: {topics: ["t.x"], labels: {env: [prod]}}
    decision: deny
    reason: not prod
  - id: allow
    match: {topics: ["t.x"]}
    decision: allow
"""
    assert never_allowed(_policy(rules), _req()) is None


def test_too_deep_a_path_is_never_allowed() -> None:
    policy = _policy(ALLOW_TAGGED, extra="delegation: {max_depth: 1}\n")
    proof = never_allowed(policy, _req(path=("a", "b", "c")))
    assert proof is not None and proof.rule_id == "delegation.max_depth"
