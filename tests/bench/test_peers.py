"""benchmarks/peers.py: the translations into Rego, Cedar and Casbin mean what Proctor means."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from proctor.engine import compile_policy

ROOT = Path(__file__).resolve().parents[2]


def _peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", ROOT / "benchmarks" / "peers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_peers"] = module
    spec.loader.exec_module(module)
    return module


peers = _peers()
POLICY = """\
version: v1
rules:
  - {id: a, match: {topics: ["job.*.send.*"], risk_tags: [external]}, decision: require_approval,
     reason: x}
  - {id: b, match: {topics: ["job.*.send.bulk", "job.all"]}, decision: deny, reason: x}
  - {id: c, match: {topics: ["job.*.send.*"]}, decision: allow, reason: x}
"""


def test_casbin_regex_keeps_star_inside_one_segment() -> None:
    rows = peers.rule_table(compile_policy(POLICY))
    lines = peers.casbin_lines(rows)
    # strongest decision first, then file order
    assert [line[2] for line in lines] == ["b", "b", "a", "c"]
    rx = lines[2][0]
    assert re.match(rx, "job.42.send.email")
    assert not re.match(rx, "job.42.x.send.email")
    assert not re.match(rx, "job.42.send.email.more")
    assert re.match(lines[2][1], ",external,pii,") and not re.match(lines[2][1], ",pii,")
    assert lines[3][1] == ".*"


def test_cedar_pins_the_segment_count() -> None:
    text = peers.cedar_policies(peers.rule_table(compile_policy(POLICY)))
    assert '(context.topic like "job.*.send.*" && context.nseg == 4)' in text
    assert 'context.nseg == 2' in text and 'containsAny(["external"])' in text


def test_combine_is_deny_overrides_with_the_earliest_tie() -> None:
    rows = peers.rule_table(compile_policy(POLICY))
    assert peers.combine(rows, set()) == ("deny", "default")
    assert peers.combine(rows, {0, 2}) == ("require_approval", "a")
    assert peers.combine(rows, {0, 1, 2}) == ("deny", "b")


def test_unsupported_conditions_are_refused() -> None:
    with pytest.raises(SystemExit, match="only topics and risk_tags"):
        peers.rule_table(compile_policy(
            "version: v1\nrules:\n  - {id: x, match: {topics: [a], agents: [b]}, "
            "decision: allow, reason: y}\n"))


@pytest.mark.parametrize("peer", ["opa", "cedar", "casbin"])
def test_installed_peers_agree_on_the_seed_policy(peer: str) -> None:
    dist = peers.PEERS[peer][0]
    if not peers.version_of(dist):
        pytest.skip(f"{dist} not installed (benchmarks/requirements-peers.txt)")
    case = peers.run_case("seed", (ROOT / "examples" / "safety.yaml").read_text(), 150, 150,
                          [peer])
    assert case["engines"][peer]["mismatches"] == 0
    assert case["engines"][peer]["decisions"] == 150
