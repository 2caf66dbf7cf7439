"""Every mistake a user can make is a PolicyError naming file, line and rule."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proctor.engine import PolicyError, compile_policy, load_policy

GOOD_RULE = """\
  - id: ok
    match: {topics: ["job.*.read"]}
    decision: allow
"""


def policy_error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        compile_policy(textwrap.dedent(text), "p.yaml")
    return info.value


def expect(text: str, line: int | None, rule_id: str | None, *fragments: str) -> None:
    err = policy_error(text)
    assert err.file == "p.yaml"
    assert err.line == line, str(err)
    assert err.rule_id == rule_id, str(err)
    for fragment in fragments:
        assert fragment in err.message, str(err)
    where = "p.yaml" if line is None else f"p.yaml:{line}"
    rule = "" if rule_id is None else f" rule '{rule_id}':"
    assert str(err) == f"{where}:{rule} {err.message}"


# (name, policy text, line, rule id, message fragments)
CASES = [
    (
        "unknown key in a rule",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["a.b"]}
            decison: allow
        """,
        5,
        "r1",
        ["unknown key 'decison'"],
    ),
    (
        "unknown key in match",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: ["a.b"]
              agent: ["x"]
            decision: allow
        """,
        6,
        "r1",
        ["unknown key 'agent'", "agents"],
    ),
    (
        "unknown top-level key",
        """\
        version: v1
        rulez: []
        """,
        2,
        None,
        ["unknown key 'rulez'"],
    ),
    (
        "a segment mixing letters and *",
        """\
        version: v1
        rules:
          - id: ok
            match: {topics: ["a.b"]}
            decision: allow
          - id: mixed
            match:
              topics:
                - "job.*.read"
                - "job.ex*port"
            decision: allow
        """,
        10,
        "mixed",
        ["ex*port"],
    ),
    (
        "an empty segment",
        """\
        version: v1
        rules:
          - id: empty-seg
            match: {topics: ["job..read"]}
            decision: allow
        """,
        4,
        "empty-seg",
        ["segment 2 is empty"],
    ),
    (
        "a bad character in a pattern",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["job/read"]}
            decision: allow
        """,
        4,
        "r1",
        ["job/read"],
    ),
    (
        "duplicate ids",
        """\
        version: v1
        rules:
          - id: twice
            match: {topics: ["a"]}
            decision: allow
          - id: twice
            match: {topics: ["b"]}
            decision: allow
        """,
        6,
        "twice",
        ["duplicate rule id", "line 3"],
    ),
    (
        "unknown decision",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["a"]}
            decision: permit
        """,
        5,
        "r1",
        ["decision must be one of allow, deny, require_approval", "permit"],
    ),
    (
        "deny without a reason",
        """\
        version: v1
        rules:
          - id: no-reason
            match: {topics: ["a"]}
            decision: deny
        """,
        3,
        "no-reason",
        ["deny rule needs a reason"],
    ),
    (
        "require_approval without a reason",
        """\
        version: v1
        rules:
          - id: no-reason
            match: {topics: ["a"]}
            decision: require_approval
        """,
        3,
        "no-reason",
        ["require_approval rule needs a reason"],
    ),
    (
        "approvers on an allow rule",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["a"]}
            decision: allow
            approvers: [team]
        """,
        6,
        "r1",
        ["approvers is only allowed on require_approval rules"],
    ),
    (
        "approval_ttl on a deny rule",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["a"]}
            decision: deny
            reason: nope
            approval_ttl: 1h
        """,
        7,
        "r1",
        ["approval_ttl is only allowed on require_approval rules"],
    ),
    (
        "a bad approval_ttl",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: ["a"]}
            decision: require_approval
            reason: look
            approval_ttl: 1 hour
        """,
        7,
        "r1",
        ["approval_ttl must be a positive duration"],
    ),
    (
        "topics is not a list",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: "a.b"}
            decision: allow
        """,
        4,
        "r1",
        ["match.topics must be a list", "a string"],
    ),
    (
        "no topics",
        """\
        version: v1
        rules:
          - id: r1
            match: {risk_tags: [pii]}
            decision: allow
        """,
        4,
        "r1",
        ["missing required key 'topics'"],
    ),
    (
        "empty topics",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: []}
            decision: allow
        """,
        4,
        "r1",
        ["at least one topic"],
    ),
    (
        "a number where a tag goes",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: [a]
              risk_tags: [pii, 42]
            decision: allow
        """,
        6,
        "r1",
        ["match.risk_tags entry must be a string", "42"],
    ),
    (
        "an empty tag",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: [a], risk_tags: ["  "]}
            decision: allow
        """,
        4,
        "r1",
        ["must not be empty"],
    ),
    (
        "depth is not a number",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: [a]
              depth: {min: one}
            decision: allow
        """,
        6,
        "r1",
        ["match.depth.min must be a whole number"],
    ),
    (
        "depth min above max",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: [a]
              depth: {min: 3, max: 1}
            decision: allow
        """,
        6,
        "r1",
        ["min (3) is above max (1)"],
    ),
    (
        "labels not a mapping",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: [a]
              labels: [env]
            decision: allow
        """,
        6,
        "r1",
        ["match.labels must be a mapping"],
    ),
    (
        "a label without values",
        """\
        version: v1
        rules:
          - id: r1
            match:
              topics: [a]
              labels: {env: []}
            decision: allow
        """,
        6,
        "r1",
        ["match.labels.env must list at least one value"],
    ),
    (
        "a rule without an id",
        """\
        version: v1
        rules:
          - match: {topics: [a]}
            decision: allow
        """,
        3,
        None,
        ["missing required key 'id'"],
    ),
    (
        "a reserved id",
        """\
        version: v1
        rules:
          - id: default
            match: {topics: [a]}
            decision: allow
        """,
        3,
        "default",
        ["reserved"],
    ),
    (
        "a rule that is not a mapping",
        """\
        version: v1
        rules:
          - just-a-string
        """,
        3,
        None,
        ["a rule must be a mapping"],
    ),
    (
        "a rule with no match",
        """\
        version: v1
        rules:
          - id: r1
            decision: allow
        """,
        3,
        "r1",
        ["missing required key 'match'"],
    ),
    (
        "a duplicate key in a rule",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: [a]}
            decision: allow
            decision: deny
        """,
        6,
        "r1",
        ["duplicate key 'decision'"],
    ),
    (
        "missing version",
        """\
        rules: []
        """,
        1,
        None,
        ["missing required key 'version'"],
    ),
    (
        "wrong version",
        """\
        version: v2
        """,
        1,
        None,
        ["version must be v1", "v2"],
    ),
    (
        "unknown combining",
        """\
        version: v1
        combining: permit_overrides
        """,
        2,
        None,
        ["combining must be one of deny_overrides, first_match"],
    ),
    (
        "bad default decision",
        """\
        version: v1
        default: {decision: maybe}
        """,
        2,
        None,
        ["default.decision must be one of"],
    ),
    (
        "a derive_tags entry without add",
        """\
        version: v1
        derive_tags:
          - topics: ["job.*.send.*"]
        """,
        3,
        None,
        ["missing required key 'add'"],
    ),
    (
        "a bad pattern in derive_tags",
        """\
        version: v1
        derive_tags:
          - topics: ["job.se*nd"]
            add: [external]
        """,
        3,
        None,
        ["se*nd"],
    ),
    (
        "a negative max_depth",
        """\
        version: v1
        delegation: {max_depth: -1}
        """,
        2,
        None,
        ["delegation.max_depth must be at least 0"],
    ),
    (
        "an unknown key under delegation",
        """\
        version: v1
        delegation: {depth: 3}
        """,
        2,
        None,
        ["unknown key 'depth'"],
    ),
    (
        "policy_version not a string",
        """\
        version: v1
        policy_version: 1.10
        """,
        2,
        None,
        ["policy_version must be a string"],
    ),
    (
        "a YAML syntax error",
        """\
        version: v1
        rules:
          - id: r1
            match: {topics: [a]
            decision: allow
        """,
        5,
        None,
        ["YAML syntax"],
    ),
    (
        "two documents",
        """\
        version: v1
        ---
        version: v1
        """,
        2,
        None,
        ["one YAML document"],
    ),
    (
        "a budget with an unknown key",
        """\
        version: v1
        budgets:
          - id: tokens
            unit: tokens
            limit: 10
            windw: day
        """,
        6,
        None,
        ["unknown key 'windw' in budget"],
    ),
    (
        "a budget with a bad window",
        """\
        version: v1
        budgets:
          - id: tokens
            unit: tokens
            limit: 10
            window: fortnight
        """,
        6,
        None,
        ["budget 'tokens': window must be"],
    ),
    (
        "a budget with a zero limit",
        """\
        version: v1
        budgets:
          - id: tokens
            unit: tokens
            limit: 0
        """,
        5,
        None,
        ["budget 'tokens': limit must be at least 1"],
    ),
    (
        "a budget with a bad scope",
        """\
        version: v1
        budgets:
          - id: tokens
            unit: tokens
            limit: 5
            scope: planet
        """,
        6,
        None,
        ["budget 'tokens': scope must be one of fleet, tenant, agent, run"],
    ),
    (
        "a budget with a bad kind",
        """\
        version: v1
        budgets:
          - id: tokens
            unit: tokens
            limit: 5
            kind: lease
        """,
        6,
        None,
        ["kind must be one of spend, concurrency"],
    ),
    (
        "a budget without a unit",
        """\
        version: v1
        budgets:
          - id: tokens
            limit: 5
        """,
        3,
        None,
        ["missing required key 'unit'"],
    ),
    (
        "duplicate budget ids",
        """\
        version: v1
        budgets:
          - {id: tokens, unit: tokens, limit: 5}
          - {id: tokens, unit: tokens, limit: 6}
        """,
        4,
        None,
        ["duplicate budget id 'tokens'", "line 3"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "rule_id", "fragments"),
    [pytest.param(t, ln, rid, fr, id=name) for name, t, ln, rid, fr in CASES],
)
def test_mistake_is_reported_with_file_line_and_rule(
    text: str, line: int | None, rule_id: str | None, fragments: list[str]
) -> None:
    expect(text, line, rule_id, *fragments)


def test_error_after_a_good_rule_names_the_bad_one() -> None:
    text = "version: v1\nrules:\n" + GOOD_RULE + "  - id: bad\n    match: {topics: [a]}\n"
    err = policy_error(text)
    assert (err.line, err.rule_id) == (6, "bad")


def test_empty_policy() -> None:
    expect("", None, None, "empty")
    expect("# only a comment\n", None, None, "empty")


def test_yaml_boolean_trap_is_explained() -> None:
    text = """\
    version: v1
    rules:
      - id: r1
        match: {topics: [a]}
        decision: deny
        reason: no
    """
    expect(text, 6, "r1", "reason must be a string", "quote it")


def test_policy_that_is_a_list() -> None:
    expect("- a\n- b\n", 1, None, "the policy must be a mapping")


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: v1\nrules:\n  - id: x\n    match: {topics: [a]}\n    decision: no\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.file == str(path)
    assert str(info.value).startswith(f"{path}:5: rule 'x': ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value)
    assert info.value.line is None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"version: v1\n# caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert "not UTF-8" in str(info.value)
