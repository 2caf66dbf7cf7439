"""Each feature of the policy language, with its edge cases."""

from __future__ import annotations

import hashlib
import random
import textwrap
from typing import Any

import pytest
import yaml

import proctor.engine.compiler as compiler
from proctor.engine import Budget, CompiledPolicy, Decision, Request, compile_policy
from tests.engine.generators import random_policy, random_request
from tests.engine.reference import reference_decide, topic_matches


def policy(text: str, **kw: Any) -> CompiledPolicy:
    return compile_policy(textwrap.dedent(text), "t.yaml", **kw)


def one_rule(match: str, decision: str = "allow", extra: str = "") -> CompiledPolicy:
    reason = "" if decision == "allow" else "\n        reason: because"
    return policy(
        f"""\
        version: v1
        {extra}
        rules:
          - id: r
            match: {match}
            decision: {decision}{reason}
        """
    )


def req(topic: str = "a", path: tuple[str, ...] = ("root",), **kw: Any) -> Request:
    return Request(topic=topic, delegation_path=path, **kw)


def hits(p: CompiledPolicy, *args: Any, **kw: Any) -> bool:
    return p.evaluate(req(*args, **kw)).rule_id == "r"


# -- topics ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("job.*.read", "job.1.read", True),
        ("job.*.read", "job.read", False),
        ("job.*.read", "job.1.2.read", False),
        ("job.**.read", "job.read", True),
        ("job.**.read", "job.1.2.3.read", True),
        ("job.**", "job", True),
        ("job.**", "job.a.b", True),
        ("**.read", "read", True),
        ("**.read", "x.y.read", True),
        ("**.read", "x.y.write", False),
        ("**", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("*.**", "one", True),
        ("**.*", "one", True),
        ("**.*.*", "one", False),
        ("**.*.*", "one.two", True),
        ("job.**.**.read", "job.read", True),
        ("job.**.x.**.y", "job.x.x.y.y", True),
        ("job.**.x.**.y", "job.y.x", False),
        ("Job.read", "job.read", False),
        ("job.read", "job.read.more", False),
        ("a:b.c-d.e_f", "a:b.c-d.e_f", True),
        # A '**' followed by a suffix: the suffix may not reach back into the prefix.
        ("x.*.**.y", "x.y", False),
        ("x.*.**.y", "x.q.y", True),
        ("x.*.**.y", "x.y.y", True),
        ("x.**.y.*", "x.y", False),
        ("x.**.y.*", "x.y.z", True),
        ("**.a.b", "b", False),
        ("**.a.b", "a.b", True),
        ("**.a.*", "q.a.b", True),
        ("a.**.a", "a", False),
        ("a.**.a", "a.a", True),
        ("a.**.b.**.c", "a.b.c", True),
        ("a.**.b.**.c", "a.c.b", False),
    ],
)
def test_topic_patterns(pattern: str, topic: str, expected: bool) -> None:
    p = one_rule(f'{{topics: ["{pattern}"]}}')
    assert hits(p, topic) is expected


def test_several_patterns_are_any_of() -> None:
    p = one_rule('{topics: ["a.b", "c.*"]}')
    assert hits(p, "a.b") and hits(p, "c.d") and not hits(p, "a.c")


def test_thirty_two_segments() -> None:
    topic = ".".join(["s"] * 32)
    p = one_rule('{topics: ["**.s"]}')
    assert hits(p, topic)


# -- tags --------------------------------------------------------------------------------------


def test_risk_tags_any_of_case_insensitive_and_trimmed() -> None:
    p = one_rule('{topics: [a], risk_tags: [" PII ", external]}')
    assert hits(p, risk_tags=["pii"])
    assert hits(p, risk_tags=["EXTERNAL  "])
    assert hits(p, risk_tags=["other", "Pii"])
    assert not hits(p, risk_tags=["other"])
    assert not hits(p)
    assert not hits(p, risk_tags=["", "  "])


@pytest.mark.parametrize("tags", ["[]", None])
def test_empty_or_absent_risk_tags_are_no_condition(tags: str | None) -> None:
    match = "{topics: [a]}" if tags is None else f"{{topics: [a], risk_tags: {tags}}}"
    p = one_rule(match)
    assert hits(p) and hits(p, risk_tags=["x"])


def test_risk_tags_all() -> None:
    p = one_rule("{topics: [a], risk_tags_all: [pii, Bulk]}")
    assert hits(p, risk_tags=["pii", "bulk", "x"])
    assert not hits(p, risk_tags=["pii"])
    assert not hits(p)


def test_risk_tags_any_and_all_together() -> None:
    p = one_rule("{topics: [a], risk_tags: [x, y], risk_tags_all: [z]}")
    assert hits(p, risk_tags=["x", "z"])
    assert not hits(p, risk_tags=["z"])
    assert not hits(p, risk_tags=["x"])


# -- derive_tags -------------------------------------------------------------------------------


DERIVE = """\
    version: v1
    derive_tags:
      - topics: ["job.*.send.*", "job.*.export.*"]
        add: [External]
      - topics: ["job.**"]
        add: [job]
    rules:
      - id: ext
        match: {topics: ["job.*.send.*"], risk_tags: [external]}
        decision: require_approval
        reason: external
      - id: all-of
        match: {topics: ["job.*.export.*"], risk_tags_all: [external, job, pii]}
        decision: deny
        reason: exfil
"""


def test_derived_tags_are_added_before_rules() -> None:
    p = policy(DERIVE)
    d = p.evaluate(req("job.1.send.mail"), explain=True)
    assert (d.decision, d.rule_id) == ("require_approval", "ext")
    assert d.derived_tags == ("external", "job")
    assert d.matched_rule_ids == ("ext",)


def test_derived_tags_count_for_risk_tags_all() -> None:
    p = policy(DERIVE)
    assert p.evaluate(req("job.1.export.x", risk_tags=["pii"])).rule_id == "all-of"
    assert p.evaluate(req("job.1.export.x")).rule_id == "default"


def test_derived_tags_report_only_tags_the_request_lacked() -> None:
    p = policy(DERIVE)
    d = p.evaluate(req("job.1.send.mail", risk_tags=["external"]))
    assert d.derived_tags == ("job",)
    assert p.evaluate(req("other")).derived_tags == ()
    assert p.evaluate(req("job")).derived_tags == ("job",)


# -- who ---------------------------------------------------------------------------------------


def test_agents_glob_the_acting_agent_only() -> None:
    p = one_rule('{topics: [a], agents: ["etl-*"]}')
    assert hits(p, path=("planner", "etl-7"))
    assert not hits(p, path=("etl-7", "planner"))
    assert not hits(p, path=("ETL-7",))
    assert hits(p, path=("etl-",))


def test_chain_matches_any_agent_in_the_path() -> None:
    p = one_rule('{topics: [a], chain: ["research-*"]}')
    assert hits(p, path=("research-1", "worker", "mailer"))
    assert hits(p, path=("worker", "research-2"))
    assert not hits(p, path=("worker", "mailer"))


def test_globs_treat_other_characters_literally() -> None:
    p = one_rule('{topics: [a], agents: ["a.b+c?[x]"]}')
    assert hits(p, path=("a.b+c?[x]",))
    assert not hits(p, path=("aXb+c?[x]",))
    q = one_rule('{topics: [a], agents: ["*mid*"]}')
    assert hits(q, path=("amidb",)) and hits(q, path=("mid",)) and not hits(q, path=("mxd",))


def test_tenants() -> None:
    p = one_rule('{topics: [a], tenants: ["acme", "glo*"]}')
    assert hits(p, tenant="acme") and hits(p, tenant="globex")
    assert not hits(p, tenant="Acme") and not hits(p) and not hits(p, tenant="acme2")
    star = one_rule('{topics: [a], tenants: ["*"]}')
    assert hits(star) and hits(star, tenant="x")


@pytest.mark.parametrize(
    ("bounds", "depths"),
    [
        ("{min: 1, max: 3}", {0: False, 1: True, 3: True, 4: False}),
        ("{min: 2}", {1: False, 2: True, 9: True}),
        ("{max: 0}", {0: True, 1: False}),
    ],
)
def test_depth_bounds_are_inclusive(bounds: str, depths: dict[int, bool]) -> None:
    p = one_rule(f"{{topics: [a], depth: {bounds}}}")
    for depth, expected in depths.items():
        path = tuple(f"agent{i}" for i in range(depth + 1))
        assert hits(p, path=path) is expected, depth


def test_labels_every_key_with_one_of_its_values() -> None:
    p = one_rule("{topics: [a], labels: {env: [prod, stage], tier: [1]}}")
    assert hits(p, labels={"env": "prod", "tier": "1", "other": "x"})
    assert hits(p, labels={"env": "stage", "tier": "1"})
    assert not hits(p, labels={"env": "prod"})
    assert not hits(p, labels={"env": "dev", "tier": "1"})
    assert not hits(p, labels={"env": "PROD", "tier": "1"})
    assert not hits(p)


def test_empty_glob_lists_are_no_condition() -> None:
    p = one_rule("{topics: [a], agents: [], chain: [], tenants: [], labels: {}}")
    assert hits(p, tenant="t", path=("x", "y"))


# -- combining ---------------------------------------------------------------------------------

COMBINE = """\
    version: v1
    combining: {mode}
    rules:
      - id: allow-first
        match: {{topics: ["a.*"]}}
        decision: allow
      - id: approve
        match: {{topics: ["a.b"]}}
        decision: require_approval
        reason: look
      - id: deny-1
        match: {{topics: ["a.b"], risk_tags: [x]}}
        decision: deny
        reason: one
      - id: deny-2
        match: {{topics: ["**"], risk_tags: [x]}}
        decision: deny
        reason: two
"""


def test_deny_overrides() -> None:
    p = policy(COMBINE.format(mode="deny_overrides"))
    d = p.evaluate(req("a.b", risk_tags=["x"]), explain=True)
    assert (d.decision, d.rule_id) == ("deny", "deny-1")
    assert d.matched_rule_ids == ("allow-first", "approve", "deny-1", "deny-2")
    assert p.evaluate(req("a.b")).rule_id == "approve"
    assert p.evaluate(req("a.c")).rule_id == "allow-first"
    assert p.evaluate(req("z", risk_tags=["x"])).rule_id == "deny-2"


def test_deny_overrides_is_the_default_mode() -> None:
    text = COMBINE.format(mode="deny_overrides").replace("    combining: deny_overrides\n", "")
    p = policy(text)
    assert p.combining == "deny_overrides"
    assert p.evaluate(req("a.b", risk_tags=["x"])).rule_id == "deny-1"


def test_first_match() -> None:
    p = policy(COMBINE.format(mode="first_match"))
    assert p.combining == "first_match"
    d = p.evaluate(req("a.b", risk_tags=["x"]), explain=True)
    assert (d.decision, d.rule_id) == ("allow", "allow-first")
    assert d.matched_rule_ids == ("allow-first", "approve", "deny-1", "deny-2")
    assert p.evaluate(req("q.b", risk_tags=["x"])).rule_id == "deny-2"


def test_ties_go_to_the_earliest_rule_beyond_one_machine_word() -> None:
    rules = "\n".join(
        f'  - id: r{i}\n    match: {{topics: ["a.**"], risk_tags: [t{i % 7}]}}\n'
        f"    decision: {'deny' if i % 5 == 4 else 'allow'}\n    reason: n{i}"
        for i in range(200)
    )
    p = compile_policy("version: v1\nrules:\n" + rules + "\n")
    d = p.evaluate(req("a.b", risk_tags=["t6"]), explain=True)
    assert d.rule_id == "r34"  # the first deny naming t6: i % 7 == 6 and i % 5 == 4
    assert d.matched_rule_ids == tuple(f"r{i}" for i in range(200) if i % 7 == 6)


# -- default, max_depth ------------------------------------------------------------------------


def test_default_default() -> None:
    p = policy("version: v1\n")
    d = p.evaluate(req("x"), explain=True)
    assert (d.decision, d.rule_id, d.reason, d.matched_rule_ids) == (
        "deny",
        "default",
        "no rule matched",
        (),
    )


def test_empty_sections_are_empty() -> None:
    p = policy("version: v1\nrules:\nbudgets:\nderive_tags:\ndelegation:\n")
    assert p.rule_count == 0 and p.budgets == ()
    assert p.evaluate(req("x")).rule_id == "default"


def test_custom_default() -> None:
    p = policy(
        """\
        version: v1
        default: {decision: require_approval, reason: ask a human, approval_ttl: 2d}
        """
    )
    d = p.evaluate(req("x"))
    assert (d.decision, d.rule_id, d.reason) == ("require_approval", "default", "ask a human")
    assert d.approvers == () and d.approval_ttl_seconds == 2 * 86400
    allow = policy("version: v1\ndefault: {decision: allow}\n").evaluate(req("x"))
    assert (allow.decision, allow.reason) == ("allow", "no rule matched")


@pytest.mark.parametrize(
    ("max_depth", "path_len", "too_deep"),
    [(2, 3, False), (2, 4, True), (0, 1, False), (0, 2, True)],
)
def test_max_depth(max_depth: int, path_len: int, too_deep: bool) -> None:
    p = one_rule("{topics: [a]}", extra=f"delegation: {{max_depth: {max_depth}}}")
    d = p.evaluate(req("a", path=tuple(f"g{i}" for i in range(path_len))), explain=True)
    if too_deep:
        assert (d.decision, d.rule_id, d.matched_rule_ids) == ("deny", "delegation.max_depth", ())
        assert str(max_depth) in d.reason
    else:
        assert d.rule_id == "r"


def test_no_max_depth_means_no_limit() -> None:
    p = one_rule("{topics: [a]}", extra="delegation: {}")
    assert hits(p, path=tuple(f"g{i}" for i in range(32)))


# -- metadata ----------------------------------------------------------------------------------


def test_policy_version_defaults_to_sha256_prefix() -> None:
    text = "version: v1\n"
    assert compile_policy(text).policy_version == hashlib.sha256(text.encode()).hexdigest()[:12]
    explicit = compile_policy('version: v1\npolicy_version: "2026.11.22-1"\n')
    assert explicit.policy_version == "2026.11.22-1"
    assert explicit.evaluate(req()).policy_version == "2026.11.22-1"


def test_approvers_and_ttl_reach_the_decision() -> None:
    p = policy(
        """\
        version: v1
        rules:
          - id: r
            match: {topics: [a]}
            decision: require_approval
            reason: check
            approvers: [data-governance, sec]
            approval_ttl: 90s
          - id: plain
            match: {topics: [b]}
            decision: require_approval
            reason: check
        """
    )
    d = p.evaluate(req("a"))
    assert d.approvers == ("data-governance", "sec") and d.approval_ttl_seconds == 90
    assert p.evaluate(req("b")).approval_ttl_seconds == 3600


def test_explain_only_when_asked() -> None:
    p = one_rule("{topics: [a]}")
    assert p.evaluate(req("a")).matched_rule_ids == ()
    assert p.evaluate(req("a"), explain=True).matched_rule_ids == ("r",)


def test_compiled_policy_surface() -> None:
    text = textwrap.dedent(
        """\
        version: v1
        rules:
          - id: one
            match: {topics: [a]}
            decision: allow
        budgets:
          - {id: fleet-tokens, unit: tokens, limit: 5000000, window: day, scope: fleet}
          - {id: burst, unit: tokens, limit: 100, window: 30s}
          - {id: agents, unit: agents, limit: 50, kind: concurrency, scope: tenant}
        """
    )
    p = compile_policy(text, "src.yaml")
    assert (p.source, p.text, p.rule_count) == ("src.yaml", text, 1)
    assert p.rule("one") is p.rules[0] and p.rule("two") is None
    assert p.budgets == (
        Budget("fleet-tokens", "tokens", 5000000, "day", 0, "day", "fleet", "spend", 7),
        Budget("burst", "tokens", 100, "fixed", 30, "30s", "fleet", "spend", 8),
        Budget("agents", "agents", 50, "none", 0, "none", "tenant", "concurrency", 9),
    )
    assert isinstance(p.evaluate(req("a")), Decision)


def test_decision_is_frozen() -> None:
    d = one_rule("{topics: [a]}").evaluate(req("a"))
    with pytest.raises(AttributeError):
        d.rule_id = "x"  # type: ignore[misc]


# -- the lazy automaton --------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1, 10, 60])
def test_walk_past_the_prebuilt_states(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """With a tiny budget most walks leave the prebuilt automaton for the trie."""
    monkeypatch.setattr(compiler, "EAGER_MIN", budget)
    monkeypatch.setattr(compiler, "EAGER_FACTOR", 0)
    r = random.Random(budget)
    for _ in range(15):
        pol = random_policy(r, 30)
        compiled = compile_policy(yaml.safe_dump(pol))
        assert not compiled._auto.complete
        for _ in range(40):
            rq = random_request(r, pol)
            want = reference_decide(pol, rq)
            for explain in (True, False):
                got = compiled.evaluate(Request(**rq), explain=explain)
                assert (got.rule_id, got.derived_tags) == (
                    want["rule_id"],
                    tuple(want["derived_tags"]),
                )
                if explain:
                    assert list(got.matched_rule_ids) == want["matched_rule_ids"]


def test_small_policies_get_the_whole_automaton() -> None:
    p = one_rule('{topics: ["**.x.**.y"]}')
    assert p._auto.complete
    for topic in ("a.x.b.y", "x.x.y", "q.r.s", "x.y", "y.x", "x.y.x.y"):
        assert hits(p, topic) is topic_matches("**.x.**.y", topic), topic
