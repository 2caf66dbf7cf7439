"""proctor check's findings: rules that can never decide.

Rule B can never decide when an earlier-or-stronger rule A matches every
request B matches: under first_match A comes first; under deny_overrides A's
decision is stronger, or equal and A comes first. Coverage is decided
conservatively (a warning is always true; some covered rules may go unnoticed):

- topics: every pattern of B is covered by a pattern of A, found by walking A's
  pattern trie with B's segments as symbols (a literal takes literal, ``*`` and
  ``**`` edges; ``*`` takes ``*`` and ``**`` edges; ``**`` only a ``**`` loop);
- tags: A has no any-of condition or B's any-of tags (or B's guaranteed tags)
  meet A's; A's all-of tags are among B's guaranteed tags;
- agents, chain, tenants: A states none, or every glob of B is matched by A;
- depth: A's bounds hold B's; labels: every key of A is in B with fewer values.
"""

from __future__ import annotations

from dataclasses import dataclass

from proctor.engine.compiler import Automaton, glob_matcher
from proctor.engine.evaluate import CompiledPolicy
from proctor.engine.model import DENY, DENY_OVERRIDES, REQUIRE_APPROVAL, Match, Rule
from proctor.engine.topics import GLOBSTAR, STAR, canonical, parse_pattern

_RANK = {DENY: 2, REQUIRE_APPROVAL: 1}


@dataclass(frozen=True, slots=True)
class Finding:
    """One warning of proctor check."""

    file: str
    line: int
    rule_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: rule '{self.rule_id}': warning: {self.message}"


def lint(policy: CompiledPolicy) -> list[Finding]:
    """Warnings for policy, in file order."""
    auto = Automaton(policy.policy, split_suffixes=False, build=False)
    rules = policy.rules
    first_match = policy.combining != DENY_OVERRIDES
    findings: list[Finding] = []
    for b_index, b in enumerate(rules):
        candidates: set[int] | None = None
        for pattern in b.match.topics:
            covering = _covering_rules(auto, pattern)
            candidates = covering if candidates is None else candidates & covering
            if not candidates:
                break
        for a_index in sorted(candidates or ()):
            if a_index == b_index:
                continue
            a = rules[a_index]
            if not _beats(a, a_index, b, b_index, first_match):
                continue
            if not _covers(a.match, b.match):
                continue
            if a.match == b.match:
                why = f"same match as rule '{a.id}' (line {a.line})"
            else:
                why = f"every request it matches also matches rule '{a.id}' (line {a.line})"
            if first_match or a_index < b_index and _rank(a) == _rank(b):
                wins = "which comes first"
            else:
                wins = f"which wins with {a.decision}"
            findings.append(
                Finding(
                    policy.source,
                    b.line,
                    b.id,
                    f"can never decide: {why}, {wins}",
                )
            )
            break
    return findings


def _rank(rule: Rule) -> int:
    return _RANK.get(rule.decision, 0)


def _beats(a: Rule, ai: int, b: Rule, bi: int, first_match: bool) -> bool:
    if first_match:
        return ai < bi
    return _rank(a) > _rank(b) or (_rank(a) == _rank(b) and ai < bi)


def _covering_rules(auto: Automaton, pattern: str) -> set[int]:
    """Rules with a topic pattern that matches every topic pattern matches."""
    nodes = set(auto._closure(0))
    for sym in canonical(parse_pattern(pattern)):
        nxt: set[int] = set()
        for n in nodes:
            if auto.is_glob[n]:
                nxt.add(n)
            if sym == GLOBSTAR:
                continue
            if sym != STAR:
                child = auto.lit[n].get(sym, -1)
                if child >= 0:
                    nxt.update(auto._closure(child))
            if auto.star[n] >= 0:
                nxt.update(auto._closure(auto.star[n]))
        nodes = nxt
        if not nodes:
            return set()
    out: set[int] = set()
    for n in nodes:
        out.update(auto.term_rules.get(n, ()))
    return out


def _globs_cover(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a:
        return True
    if not b:
        return False
    match = glob_matcher(a)
    return all((g in a) or ("*" not in g and match(g)) or "*" in a for g in b)


def _covers(a: Match, b: Match) -> bool:
    guaranteed = set(b.risk_tags_all)
    if len(b.risk_tags) == 1:
        guaranteed.add(b.risk_tags[0])
    if a.risk_tags and not (
        (b.risk_tags and set(b.risk_tags) <= set(a.risk_tags)) or guaranteed & set(a.risk_tags)
    ):
        return False
    if not set(a.risk_tags_all) <= guaranteed:
        return False
    if not (_globs_cover(a.agents, b.agents) and _globs_cover(a.tenants, b.tenants)):
        return False
    if a.chain and not (_globs_cover(a.chain, b.chain) or _globs_cover(a.chain, b.agents)):
        return False
    if a.depth_min is not None and (b.depth_min is None or b.depth_min < a.depth_min):
        return False
    if a.depth_max is not None and (b.depth_max is None or b.depth_max > a.depth_max):
        return False
    b_labels = dict(b.labels)
    for key, values in a.labels:
        if key not in b_labels or not set(b_labels[key]) <= set(values):
            return False
    return True
