"""Policy files an attacker or a mistake can put at the policy path: only a regular
file of UTF-8 text within the size limit is read; YAML aliases, rules and patterns
are bounded; a compile can be abandoned from another thread."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor import engine
from proctor.engine import CompileCancelled, Limits, PolicyError, compile_policy, load_policy

pytestmark = pytest.mark.timeout(60)

SMALL = "version: v1\nrules:\n  - {id: r, match: {topics: [a.b]}, decision: allow}\n"


def anchor_bomb(rules: int = 2000, patterns: int = 5000) -> str:
    """One anchored list of topic patterns reused by every rule (the probe's 220 KB file)."""
    topics = ", ".join(f"t.p{i}" for i in range(patterns))
    lines = ["version: v1", "rules:", f"  - {{id: r0, match: {{topics: &t [{topics}]}}, "
             "decision: allow}"]
    lines += [f"  - {{id: r{i}, match: {{topics: *t}}, decision: allow}}" for i in range(1, rules)]
    return "\n".join(lines) + "\n"


def laughs(levels: int = 9) -> str:
    """The billion laughs: each level lists the previous one ten times."""
    out = ["version: v1", 'a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        out.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(out) + "\n"


# -- what is read ------------------------------------------------------------------------------


def test_a_fifo_is_a_load_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError) as e:
        load_policy(fifo)
    assert e.value.file == str(fifo) and "FIFO" in str(e.value)


def test_a_symlink_to_dev_zero_is_a_load_error(tmp_path: Path) -> None:
    link = tmp_path / "policy.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(PolicyError, match="character device, not a regular file"):
        load_policy(link)


def test_a_directory_and_a_missing_file_are_load_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="directory"):
        load_policy(tmp_path)
    with pytest.raises(PolicyError, match="No such file"):
        load_policy(tmp_path / "absent.yaml")


def test_a_file_over_the_size_limit_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(SMALL + "#" * 2000 + "\n")
    with pytest.raises(PolicyError, match="larger than the limit of 1000 bytes"):
        load_policy(path, limits=Limits(max_bytes=1000))
    assert load_policy(path, limits=Limits(max_bytes=10_000)).rule_count == 1


def test_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: v1\n# caf\xe9\n")
    with pytest.raises(PolicyError, match="not UTF-8") as e:
        load_policy(path)
    assert e.value.line == 2


def test_read_text_file_is_public_for_other_files(tmp_path: Path) -> None:
    path = tmp_path / "principals.yaml"
    path.write_text("callers: []\n")
    assert engine.read_text_file(path, what="principals file") == "callers: []\n"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(PolicyError, match="cannot read the principals file"):
        engine.read_text_file(tmp_path / "fifo", what="principals file")


# -- what compiling may cost ---------------------------------------------------------------------


def test_an_anchor_reused_across_2000_rules_is_refused() -> None:
    text = anchor_bomb()
    assert len(text) < 300_000
    with pytest.raises(PolicyError, match="aliases expand the document past the size limit"):
        compile_policy(text, "bomb.yaml")


def test_a_smaller_reuse_is_refused_by_the_pattern_limit() -> None:
    text = anchor_bomb(rules=300, patterns=5000)
    with pytest.raises(PolicyError, match="more than 1000000 topic patterns") as e:
        compile_policy(text, "bomb.yaml")
    assert e.value.line is not None


def test_reuse_within_the_limits_compiles_like_the_expanded_text() -> None:
    text = anchor_bomb(rules=20, patterns=10)
    assert compile_policy(text).rule_count == 20


def test_the_billion_laughs_is_refused() -> None:
    with pytest.raises(PolicyError, match="aliases expand"):
        compile_policy(laughs(), "laughs.yaml")


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(PolicyError, match="inside the node it refers to"):
        compile_policy("version: v1\nrules: &r [*r]\n", "loop.yaml")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(max_rules=2), "3 rules, more than the limit of 2"),
        (Limits(max_patterns=3), "more than 3 topic patterns"),
        (Limits(max_pattern_segments=7), "more than 7 segments in all"),
    ],
)
def test_compilation_limits(limits: Limits, message: str) -> None:
    text = "version: v1\nrules:\n" + "".join(
        f"  - {{id: r{i}, match: {{topics: [a.b.c{i}, x.y]}}, decision: allow}}\n"
        for i in range(3)
    )
    assert compile_policy(text).rule_count == 3
    with pytest.raises(PolicyError, match=message):
        compile_policy(text, limits=limits)


# -- abandoning a compile ------------------------------------------------------------------------


def test_a_cancelled_compile_stops() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CompileCancelled):
        compile_policy(SMALL, cancel=cancel)
    assert compile_policy(SMALL, cancel=threading.Event()).rule_count == 1


def test_a_compile_is_abandoned_midway_from_another_thread() -> None:
    text = "version: v1\nrules:\n" + "".join(
        f"  - {{id: r{i}, match: {{topics: [a.{i}.**.x, b.*.c{i}]}}, decision: allow}}\n"
        for i in range(40_000)
    )
    cancel = threading.Event()
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            compile_policy(text, cancel=cancel)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert isinstance(outcome[0], CompileCancelled)


# -- mutated policies: a load error, never a crash -----------------------------------------------

BASE = {
    "version": "v1",
    "derive_tags": [{"topics": ["job.*.send.*"], "add": ["external"]}],
    "delegation": {"max_depth": 3},
    "rules": [
        {"id": "a", "match": {"topics": ["job.**"], "risk_tags": ["pii"],
                              "depth": {"min": 0, "max": 2}, "labels": {"env": ["prod"]}},
         "decision": "deny", "reason": "no"},
        {"id": "b", "match": {"topics": ["job.*.read"], "agents": ["etl-*"]},
         "decision": "require_approval", "reason": "ask", "approval_ttl": "1h"},
    ],
    "budgets": [{"id": "usd", "unit": "usd", "limit": 10, "window": "day", "scope": "tenant"}],
}

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.just("**"), st.just("a.*b"), st.just(""),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


def _mutate(doc: object, path: list[int], value: object) -> object:
    """Replace the node reached by following path (indexes mod the children) with value."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        key = sorted(doc, key=str)[path[0] % len(doc)]
        return {**doc, key: _mutate(doc[key], path[1:], value)}
    i = path[0] % len(doc)
    return [*doc[:i], _mutate(doc[i], path[1:], value), *doc[i + 1:]]


def _load_or_error(text: str) -> None:
    try:
        compile_policy(text, "fuzz.yaml")
    except PolicyError as exc:
        assert exc.file == "fuzz.yaml" and exc.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.lists(st.integers(0, 50), max_size=6), value=_values)
def test_mutated_policies_load_or_fail_cleanly(path: list[int], value: object) -> None:
    _load_or_error(yaml.safe_dump(_mutate(BASE, path, value), sort_keys=False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=st.sampled_from(list("&*ab: -[]{},\n'\"!|>#%@`\t.")), max_size=120),
    depth=st.integers(0, 3000),
)
def test_random_yaml_text_and_deep_nesting_fail_cleanly(text: str, depth: int) -> None:
    _load_or_error("version: v1\nrules: " + text)
    _load_or_error("version: v1\nrules: " + "[" * depth + "]" * depth + "\n")
    _load_or_error("version: v1\nrules:\n  - " + "{a: " * depth + "1" + "}" * depth + "\n")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(levels=st.integers(1, 12), fan=st.integers(2, 40))
def test_alias_fans_are_refused_or_bounded(levels: int, fan: int) -> None:
    out = ["version: v1", "x0: &x0 [job.a]"]
    for i in range(1, levels + 1):
        out.append(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * fan)}]")
    out.append("rules:")
    out.append(f"  - {{id: r, match: {{topics: *x{levels}}}, decision: allow}}")
    try:
        compile_policy("\n".join(out) + "\n", "fan.yaml")
    except PolicyError as exc:
        # an unknown top key (x0...) or the alias bound: a clear message either way
        assert exc.message
