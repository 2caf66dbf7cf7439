"""proctor check's warnings: rules that can never decide."""

from __future__ import annotations

import textwrap

from proctor.engine import compile_policy
from proctor.engine.lint import lint


def warnings(text: str) -> list[str]:
    return [str(f) for f in lint(compile_policy(textwrap.dedent(text), "l.yaml"))]


def test_exact_duplicate() -> None:
    out = warnings(
        """\
        version: v1
        rules:
          - id: first
            match: {topics: ["a.*"], risk_tags: [pii]}
            decision: deny
            reason: x
          - id: second
            match: {topics: ["a.*"], risk_tags: [pii]}
            decision: deny
            reason: y
        """
    )
    assert out == [
        "l.yaml:7: rule 'second': warning: can never decide: same match as rule 'first' "
        "(line 3), which comes first"
    ]


def test_covered_by_a_stronger_later_rule() -> None:
    out = warnings(
        """\
        version: v1
        rules:
          - id: narrow-allow
            match: {topics: ["job.7.read"], risk_tags: [pii], agents: [etl-1]}
            decision: allow
          - id: broad-deny
            match: {topics: ["job.**"], risk_tags: [pii, bulk]}
            decision: deny
            reason: blocked
        """
    )
    assert len(out) == 1
    assert out[0].startswith("l.yaml:3: rule 'narrow-allow': warning: can never decide")
    assert "broad-deny" in out[0] and "wins with deny" in out[0]


def test_first_match_shadowing() -> None:
    out = warnings(
        """\
        version: v1
        combining: first_match
        rules:
          - id: catch-all
            match: {topics: ["**"]}
            decision: allow
          - id: never
            match: {topics: ["job.*.export.bulk"], tenants: [acme]}
            decision: deny
            reason: too late
        """
    )
    assert len(out) == 1 and "rule 'never'" in out[0] and "comes first" in out[0]


def test_no_warning_when_coverage_is_partial() -> None:
    out = warnings(
        """\
        version: v1
        rules:
          - id: a
            match: {topics: ["job.*.read"], risk_tags: [pii]}
            decision: deny
            reason: x
          - id: b
            match: {topics: ["job.**"], risk_tags: [pii]}
            decision: allow
          - id: c
            match: {topics: ["job.*.read"], risk_tags: [pii], labels: {env: [prod]}}
            decision: require_approval
            reason: y
          - id: d
            match: {topics: ["job.*.read"], agents: ["etl-*"]}
            decision: deny
            reason: z
          - id: e
            match: {topics: ["job.*.read"], depth: {min: 1}}
            decision: deny
            reason: w
        """
    )
    # b: broader than a; c: a matches only with pii... c needs pii too, so a covers c.
    assert [o.split(":")[2].strip() for o in out] == ["rule 'c'"]


def test_seed_policy_is_clean() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    policy = compile_policy((root / "examples" / "safety.yaml").read_text())
    assert lint(policy) == []
