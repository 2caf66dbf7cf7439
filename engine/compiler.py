"""Policy -> the tables evaluation reads: a topic automaton whose accepting
states carry small, local rule bitsets.

1. Every topic pattern (of rules and of derive_tags) goes into one segment
   trie: literal children in a dict, a ``*`` child, and a ``**`` child that
   loops on itself (patterns are first made canonical, so no two ``**`` are
   adjacent). Trie nodes record the rules and derive entries whose pattern
   ends there.

2. Walking that trie for a topic is a set of trie nodes per segment. The sets
   are memoised as a deterministic automaton (``DState``): a state knows the
   literal segments any of its nodes can take (``lits``), its successor for
   each literal once computed (``trans``) and one shared successor for every
   other segment (``other``), so the walk is one dict lookup per segment.
   States are built eagerly at compile time up to a budget (breadth first
   from the root) and lazily beyond it; past a hard cap new states are built
   per walk and not kept, so memory stays bounded whatever the patterns.

3. The end state of the walk owns a ``Bundle``: the rules whose patterns end
   in any of its nodes, renumbered densely 0..k-1 in file order. Every set in
   the bundle is a Python int over those k local bits only: the rules with no
   tag condition (OR the rules naming a derived tag), one mask per tag, the
   decision masks, and the "plain" mask of rules that have no condition beyond
   topic and tags. So the bit operations cost O(k), the rules that can match
   this topic, never O(rules in the policy). Rules with further conditions
   (agents, chain, tenants, depth, labels, risk_tags_all) carry a Condition
   that is checked only for candidates that survive topic and tags; the
   evaluator checks them in priority order and stops at the first that holds.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Container
from typing import Any

from engine.model import DENY, DENY_OVERRIDES, REQUIRE_APPROVAL, Match, Policy
from engine.topics import GLOBSTAR, STAR, canonical, parse_pattern

# DFA states kept: eager ones up to EAGER_FACTOR x trie nodes (at least EAGER_MIN),
# lazily built ones up to HARD_CAP in all.
EAGER_MIN = 4096
EAGER_FACTOR = 3
HARD_CAP = 1_000_000


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

    def __init__(self, match: Match) -> None:
        self.depth_min = match.depth_min
        self.depth_max = match.depth_max
        self.agents = glob_matcher(match.agents) if match.agents else None
        self.chain = glob_matcher(match.chain) if match.chain else None
        self.tenants = glob_matcher(match.tenants) if match.tenants else None
        self.labels = tuple((k, frozenset(v)) for k, v in match.labels)
        self.tags_all = match.risk_tags_all

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


class Bundle:
    """The rules that a topic's end state can match, as local bitsets (see module doc)."""

    __slots__ = (
        "rules",
        "base",
        "tagmask",
        "plain",
        "order",
        "deny",
        "conds",
        "derived",
    )

    def __init__(
        self,
        rule_indexes: list[int],
        derived: frozenset[str],
        policy: Policy,
        conditions: list[Condition | None],
    ) -> None:
        self.rules = tuple(rule_indexes)
        self.derived = derived
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
                tagmask[tag] = tagmask.get(tag, 0) | bit
                if tag in derived:
                    base |= bit
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
        self.tagmask = tagmask
        self.plain = plain
        self.deny = deny
        # Masks in the order candidates are tried: by strength, or all at once.
        everything = deny | approve | allow
        if policy.combining == DENY_OVERRIDES:
            self.order = tuple(m for m in (deny, approve, allow) if m)
        else:
            self.order = (everything,) if everything else ()
        self.conds = tuple(conds)


_NO_LITERALS: frozenset[str] = frozenset()


class _AnyOf:
    """Membership in any of several trie nodes' literal dicts (for large fan-outs)."""

    __slots__ = ("maps",)

    def __init__(self, maps: tuple[dict[str, int], ...]) -> None:
        self.maps = maps

    def __contains__(self, seg: object) -> bool:
        return any(seg in m for m in self.maps)


class DState:
    """A set of trie nodes reached by a topic prefix (one state of the lazy DFA)."""

    __slots__ = ("nodes", "trans", "lits", "other", "bundle")

    def __init__(self, nodes: frozenset[int], lits: Container[str]) -> None:
        self.nodes = nodes
        self.trans: dict[str, DState] = {}
        self.lits = lits
        self.other: DState | None = None
        self.bundle: Bundle | None = None


class Automaton:
    """The trie of every topic pattern and its lazily determinised walk."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.lit: list[dict[str, int]] = [{}]
        self.star: list[int] = [-1]
        self.glob: list[int] = [-1]
        self.is_glob: list[bool] = [False]
        self.term_rules: dict[int, list[int]] = {}
        self.term_derive: dict[int, list[int]] = {}
        for index, rule in enumerate(policy.rules):
            for pattern in rule.match.topics:
                node = self._insert(pattern)
                ends = self.term_rules.setdefault(node, [])
                if not ends or ends[-1] != index:
                    ends.append(index)
        for index, entry in enumerate(policy.derive_tags):
            for pattern in entry.topics:
                node = self._insert(pattern)
                ends = self.term_derive.setdefault(node, [])
                if not ends or ends[-1] != index:
                    ends.append(index)
        self.conditions: list[Condition | None] = [
            Condition(r.match) if r.match.has_conditions_beyond_topic_and_tags else None
            for r in policy.rules
        ]
        self.states: dict[frozenset[int], DState] = {}
        self.bundles: dict[frozenset[int], Bundle] = {}
        self.start = self._intern(frozenset(self._closure(0)))
        self.dead = self._intern(frozenset())
        self.dead.other = self.dead
        self.eager_limit = max(EAGER_MIN, EAGER_FACTOR * len(self.lit))
        self._build_eagerly()

    # -- the trie ---------------------------------------------------------------------------

    def _new_node(self, is_glob: bool) -> int:
        self.lit.append({})
        self.star.append(-1)
        self.glob.append(-1)
        self.is_glob.append(is_glob)
        return len(self.lit) - 1

    def _insert(self, pattern: str) -> int:
        node = 0
        for seg in canonical(parse_pattern(pattern)):
            if seg == STAR:
                child = self.star[node]
                if child < 0:
                    child = self.star[node] = self._new_node(False)
            elif seg == GLOBSTAR:
                child = self.glob[node]
                if child < 0:
                    child = self.glob[node] = self._new_node(True)
            else:
                child = self.lit[node].get(seg, -1)
                if child < 0:
                    child = self.lit[node][seg] = self._new_node(False)
            node = child
        return node

    def _closure(self, node: int) -> list[int]:
        """node and the '**' nodes reachable from it by consuming no segment."""
        out = [node]
        while self.glob[node] >= 0:
            node = self.glob[node]
            out.append(node)
        return out

    # -- the determinised walk ---------------------------------------------------------------

    def _intern(self, nodes: frozenset[int]) -> DState:
        state = self.states.get(nodes)
        if state is not None:
            return state
        state = DState(nodes, self._literals(nodes))
        if len(self.states) < HARD_CAP:
            self.states[nodes] = state
        return state

    def _literals(self, nodes: frozenset[int]) -> Container[str]:
        """The literal segments any of nodes can take, without copying large key sets."""
        maps = [self.lit[n] for n in nodes if self.lit[n]]
        if not maps:
            return _NO_LITERALS
        if len(maps) == 1:
            return maps[0]  # the trie node's own dict: a shared view, never copied
        if sum(map(len, maps)) <= 64:
            return frozenset().union(*maps)
        return _AnyOf(tuple(maps))

    def _step(self, nodes: frozenset[int], seg: str | None) -> frozenset[int]:
        out: set[int] = set()
        for n in nodes:
            if seg is not None:
                child = self.lit[n].get(seg, -1)
                if child >= 0:
                    out.update(self._closure(child))
            if self.star[n] >= 0:
                out.update(self._closure(self.star[n]))
            if self.is_glob[n]:
                out.add(n)
        return frozenset(out)

    def advance(self, state: DState, seg: str) -> DState:
        """The successor of state on seg, memoised while under the cap."""
        keep = len(self.states) < HARD_CAP
        if seg in state.lits:
            nxt = self._intern(self._step(state.nodes, seg))
            if keep:
                state.trans[seg] = nxt
        else:
            nxt = self._intern(self._step(state.nodes, None))
            if keep:
                state.other = nxt
        return nxt

    def accept(self, state: DState) -> Bundle:
        """The bundle of rules ending in the nodes of state, shared between equal sets."""
        terminals = frozenset(
            n for n in state.nodes if n in self.term_rules or n in self.term_derive
        )
        bundle = self.bundles.get(terminals)
        if bundle is None:
            rules: set[int] = set()
            derived: set[str] = set()
            for n in terminals:
                rules.update(self.term_rules.get(n, ()))
                for d in self.term_derive.get(n, ()):
                    derived.update(self.policy.derive_tags[d].add)
            bundle = Bundle(sorted(rules), frozenset(derived), self.policy, self.conditions)
            if len(self.bundles) < HARD_CAP:
                self.bundles[terminals] = bundle
        state.bundle = bundle
        return bundle

    def _build_eagerly(self) -> None:
        queue: deque[DState] = deque([self.start])
        seen = {id(self.start)}
        while queue and len(self.states) < self.eager_limit:
            state = queue.popleft()
            self.accept(state)
            segs: set[str] = set()
            for n in state.nodes:
                segs.update(self.lit[n])
            successors = [self.advance(state, seg) for seg in segs]
            successors.append(self.advance(state, "\x00other"))
            for nxt in successors:
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    queue.append(nxt)
