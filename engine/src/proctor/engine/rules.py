"""The rules of one trie node as local bitsets, and the conditions beyond topic and tags.

Split from compiler.py: NodeRules is what the automaton's terminal states
carry; Packed is its form once laid out for evaluation (engine.layout).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from proctor.engine.model import DENY, DENY_OVERRIDES, REQUIRE_APPROVAL, Decision, Match, Policy


def glob_matcher(globs: tuple[str, ...]) -> Callable[[str], bool]:
    """A case-sensitive matcher for agent/tenant globs where '*' is any run of characters."""
    literals = frozenset(g for g in globs if "*" not in g)
    wild = [g for g in globs if "*" in g]
    if any(set(g) == {"*"} for g in wild):
        return lambda value: True
    if not wild:
        return literals.__contains__
    rx = re.compile("|".join(".*".join(map(re.escape, g.split("*"))) for g in wild), re.DOTALL)
    fullmatch = rx.fullmatch
    if not literals:
        return lambda value: fullmatch(value) is not None
    return lambda value: value in literals or fullmatch(value) is not None


class Condition:
    """The conditions of one rule beyond topic and tags; holds(request, derived)."""

    __slots__ = ("depth_min", "depth_max", "agents", "chain", "tenants", "labels", "tags_all")

    def __init__(self, match: Match, shared: dict[Any, Any] | None = None) -> None:
        memo: dict[Any, Any] = {} if shared is None else shared

        def matcher(globs: tuple[str, ...]) -> Callable[[str], bool] | None:
            if not globs:
                return None
            found: Callable[[str], bool] | None = memo.get(("globs", globs))
            if found is None:
                found = memo[("globs", globs)] = glob_matcher(globs)
            return found

        self.depth_min = match.depth_min
        self.depth_max = match.depth_max
        self.agents = matcher(match.agents)
        self.chain = matcher(match.chain)
        self.tenants = matcher(match.tenants)
        labels = tuple((k, frozenset(v)) for k, v in match.labels)
        # Few distinct values, each one object: it stays in cache at any policy size.
        self.labels = memo.setdefault(("labels", labels), labels)
        self.tags_all = memo.setdefault(("tags_all", match.risk_tags_all), match.risk_tags_all)

    def holds(self, request: Any, derived: frozenset[str]) -> bool:
        path = request.delegation_path
        if self.depth_min is not None and len(path) - 1 < self.depth_min:
            return False
        if self.depth_max is not None and len(path) - 1 > self.depth_max:
            return False
        if self.agents is not None and not self.agents(path[-1]):
            return False
        chain = self.chain
        if chain is not None and not any(chain(agent) for agent in path):
            return False
        if self.tenants is not None and not self.tenants(request.tenant):
            return False
        if self.labels:
            labels = request.labels
            for key, values in self.labels:
                if labels.get(key) not in values:
                    return False
        if self.tags_all:
            tags = request.risk_tags
            for tag in self.tags_all:
                if tag not in derived and tag not in tags:
                    return False
        return True


class NodeRules:
    """The rules whose topic pattern ends at one trie node, as local bitsets.

    Bit i stands for rules[i] (global rule indexes in file order): base holds
    the rules without an any-of tag condition, tagmask the rules naming each
    tag, plain the rules with no condition beyond topic and tags, and order the
    decision masks in the order candidates are tried (strongest first for
    deny_overrides; one mask for first_match). conds[i] is rules[i]'s Condition
    or None, decisions[i] its shared Decision (filled by engine.layout).
    """

    __slots__ = ("rules", "base", "tagmask", "plain", "order", "conds", "packed")

    def __init__(
        self,
        rule_indexes: list[int],
        policy: Policy,
        conditions: list[Condition | None],
        shared: dict[Any, Any] | None = None,
    ) -> None:
        self.rules = tuple(rule_indexes)
        self.packed: Packed = ()
        base = plain = deny = approve = allow = 0
        tagmask: dict[str, int] = {}
        conds: list[Condition | None] = []
        for local, index in enumerate(rule_indexes):
            bit = 1 << local
            rule = policy.rules[index]
            tags = rule.match.risk_tags
            if not tags:
                base |= bit
            for tag in tags:
                tag = sys.intern(tag)  # one shared key object: compared on every lookup
                tagmask[tag] = tagmask.get(tag, 0) | bit
            cond = conditions[index]
            conds.append(cond)
            if cond is None:
                plain |= bit
            if rule.decision == DENY:
                deny |= bit
            elif rule.decision == REQUIRE_APPROVAL:
                approve |= bit
            else:
                allow |= bit
        self.base = base
        self.tagmask = tagmask or _NO_TAGS
        self.plain = plain
        everything = deny | approve | allow
        # (rank, mask) in the order candidates are tried: strongest first, or all at once.
        order: tuple[tuple[int, int], ...]
        if policy.combining == DENY_OVERRIDES:
            order = tuple((r, m) for r, m in ((2, deny), (1, approve), (0, allow)) if m)
        else:
            order = ((0, everything),) if everything else ()
        # Few distinct orders exist: sharing them keeps them in cache at any policy size.
        self.order = order if shared is None else shared.setdefault(("order", order), order)
        self.conds = tuple(conds)

    def pack(
        self,
        decisions: Iterable[Decision],
        derived: tuple[str, ...] | None = None,
        with_derived: Iterable[Decision | None] = (),
        shared: dict[Any, Any] | None = None,
    ) -> Packed:
        """What evaluation reads, as one tuple (see Packed), with fresh copies of the parts.

        with_derived: the rules' Decisions carrying derived (which the
        derive_tags of the states using this node add), or nothing. shared:
        equal tag masks get one dict (never mutated), so common ones stay in cache.
        """
        out: list[Any] = [self.base, self.tagmask, self.plain, self.order, (*self.rules,), derived]
        if self.tagmask:
            out[1] = dict(self.tagmask)
            if shared is not None:
                out[1] = shared.setdefault(tuple(sorted(self.tagmask.items())), out[1])
        variants = list(with_derived) or [None] * len(self.rules)
        for cond, decision, variant in zip(self.conds, decisions, variants, strict=True):
            out += (cond, decision, variant)
        return tuple(out)


# A NodeRules as evaluation reads it: one object, not five, because at 100,000
# rules each object touched is a likely cache miss. (base, tagmask, plain,
# order, rules, derived, cond_0, decision_0, derived_decision_0, cond_1, ...):
# local rule i's Condition is at 6 + 3i, its Decision at 7 + 3i, and at 8 + 3i
# its Decision carrying the derived tags ``derived`` (when not None): the
# common answer for a request that the state's derive_tags add tags to, made
# at compile time instead of looked up in a memo whose lines are all cold.
Packed = tuple[Any, ...]
# Where evaluation finds each part of a Packed node (engine.evaluate reads them).
BASE, TAGMASK, PLAIN, ORDER, RULES, DERIVED = range(6)
FIRST_RULE = 6  # local rule 0's Condition; rule i's three slots start at FIRST_RULE + 3i
COND, DECISION, DERIVED_DECISION = range(3)  # within one rule's slots
# Never mutated: the tag masks of every node without tag conditions.
_NO_TAGS: dict[str, int] = {}
