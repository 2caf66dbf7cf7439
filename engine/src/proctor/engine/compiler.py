"""Policy -> the tables evaluation reads: a topic automaton whose states carry
small, local rule bitsets.

1. Every topic pattern (of rules and of derive_tags) goes into one segment
   trie, with the part after a lone inner ``**`` split off into that node's
   suffix trie (engine.trie says how and why).

2. Walking the trie for a topic is a set of trie nodes per segment. The sets
   are precomputed as a deterministic automaton (``DState``): a state knows
   the literal segments any of its nodes can take (``lits``), its successor
   for each literal (``trans``) and one shared successor for every other
   segment (``other``), so the walk is one dict lookup per segment. States are
   built breadth first from the root up to a budget proportional to the trie
   (every realistic policy gets its whole automaton); past the built states
   the walk goes on over the trie itself (``finish``: per node one lookup in a
   precomputed successor table). A state also lists its open ``**`` nodes
   (``globs``), whose suffix tries, each determinised too (``SuffixState``),
   are walked from the topic's end (in ``CompiledPolicy.evaluate``). Nothing is built or
   memoised while evaluating: a compiled policy never changes, and its memory
   is fixed at compile time.

3. Each trie or suffix-trie node where rule patterns end owns a ``NodeRules``:
   those rules renumbered densely 0..k-1 in file order, and every set over
   them a Python int of k bits only: the rules with no tag condition, one mask
   per tag, the decision masks, and the "plain" mask of rules with no
   condition beyond topic and tags. So the bit operations cost O(k), the rules
   whose patterns can match this topic, never O(rules in the policy), and no
   rule set is built per state. Rules with further conditions (agents, chain,
   tenants, depth, labels, risk_tags_all) carry a Condition checked only for
   candidates that survive topic and tags. With one NodeRules the evaluator
   tries candidates strongest first and stops at the first that holds; with
   several it takes each one's best and keeps the strongest, earliest.

4. A complete automaton is then copied in walk order by engine.layout (the
   builder's tables dropped), and equal parts are shared: segments and tags
   are interned, equal Conditions, matchers, derived tag sets, '**' tuples and
   decision orders are one object each. At 100,000 rules evaluation cost is
   cache misses, not rules scanned: fewer, closer objects per topic count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Iterable
from typing import Any

from proctor.engine.limits import checkpoint
from proctor.engine.model import Policy
from proctor.engine.rules import Condition, NodeRules, Packed, glob_matcher
from proctor.engine.states import NO_LITERALS, AnyOf, DState, Glob, Globs, SuffixState
from proctor.engine.trie import PatternTrie

# The state types are re-exported: layout, evaluate and tests import them from here.
__all__ = [
    "Automaton",
    "Condition",
    "DState",
    "Glob",
    "Globs",
    "NodeRules",
    "Packed",
    "SuffixState",
    "glob_matcher",
]

# Transitions built at compile time: EAGER_FACTOR per trie node, at least EAGER_MIN.
EAGER_MIN = 20_000
EAGER_FACTOR = 4


class Automaton(PatternTrie):
    """The trie of every topic pattern, its suffix tries and its determinised walk."""

    def __init__(self, policy: Policy, split_suffixes: bool = True, build: bool = True) -> None:
        super().__init__(split_suffixes)
        self.policy = policy
        # Terminals: trie nodes (>= 0) and suffix trie nodes (-1 - id).
        self.term_rules: dict[int, list[int]] = {}
        self.term_derive: dict[int, list[int]] = {}
        for index, rule in enumerate(policy.rules):
            if not index & 1023:
                checkpoint()
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
        # Equal objects shared: rules with the same conditions get one Condition
        # (and equal globs one matcher), equal derived tag sets one frozenset.
        self.shared: dict[Any, Any] = {}
        self.conditions = self._conditions(policy)
        self.node_rules: dict[int, NodeRules] = {
            node: NodeRules(indexes, policy, self.conditions, self.shared)
            for node, indexes in self.term_rules.items()
        }
        self.node_derived: dict[int, frozenset[str]] = {
            node: self._share(frozenset(tag for d in indexes for tag in policy.derive_tags[d].add))
            for node, indexes in self.term_derive.items()
        }
        if not build:
            return
        self.merged: dict[tuple[int, ...], NodeRules] = {}
        self._build_suffix_automata()
        self._build_steps()
        self.states: dict[tuple[int, ...], DState] = {}
        self.start = self._intern(tuple(sorted(self._closure(0))))
        self.dead = self._intern(())
        self.dead.other = self.dead
        self.complete = False
        self._build_eagerly()
        self.counts = {
            "automaton_states": len(self.states),
            "trie_nodes": len(self.lit),
            "terminal_nodes": len(self.node_rules),
        }

    def release(self, start: DState) -> None:
        """Walk from start (a copy, see engine.layout) and drop the builder's tables.

        A complete automaton's walk never reads them.
        """
        if not self.complete:
            raise ValueError("a partly built automaton still walks the trie")
        self.start = self.dead = start
        for table in (self.lit, self.star, self.glob, self.is_glob, self.sfx_lit, self.sfx_star):
            table.clear()
        self.step_lit.clear()
        self.step_other.clear()
        for mapping in (self.glob_sfx, self.glob_prefix, self.term_rules, self.term_derive):
            mapping.clear()
        self.node_rules.clear()
        self.node_derived.clear()
        self.merged.clear()
        self.sfx_states.clear()
        self.states.clear()
        self.shared.clear()

    def _share(self, value: frozenset[str]) -> frozenset[str]:
        if not value:
            return NO_LITERALS
        found: frozenset[str] = self.shared.setdefault(("derived", value), value)
        return found

    def _conditions(self, policy: Policy) -> list[Condition | None]:
        out: list[Condition | None] = []
        made: dict[tuple[Any, ...], Condition] = {}
        parts: dict[Any, Any] = {}
        for rule in policy.rules:
            m = rule.match
            if not m.has_conditions_beyond_topic_and_tags:
                out.append(None)
                continue
            key = (
                m.depth_min,
                m.depth_max,
                m.agents,
                m.chain,
                m.tenants,
                m.labels,
                m.risk_tags_all,
            )
            cond = made.get(key)
            if cond is None:
                cond = made[key] = Condition(m, parts)
            out.append(cond)
        return out

    # -- suffix automata ---------------------------------------------------------------------

    def _build_suffix_automata(self) -> None:
        """Determinise each suffix trie (no loops, so every state has one depth)."""
        self.sfx_states: dict[int, SuffixState] = {}
        for glob_node, root in self.glob_sfx.items():
            start = self._suffix_state((root,))
            made = {start.nodes: start}
            queue = deque([start])
            while queue:
                checkpoint()
                state = queue.popleft()
                segs: set[str] = set()
                for s in state.nodes:
                    segs.update(self.sfx_lit[s])
                for seg in (*segs, None):
                    out: list[int] = []
                    for s in state.nodes:
                        if seg is not None:
                            child = self.sfx_lit[s].get(seg, -1)
                            if child >= 0:
                                out.append(child)
                        if self.sfx_star[s] >= 0:
                            out.append(self.sfx_star[s])
                    if not out:
                        continue
                    key = tuple(sorted(set(out)))
                    nxt = made.get(key)
                    if nxt is None:
                        nxt = made[key] = self._suffix_state(key)
                        queue.append(nxt)
                    if seg is None:
                        state.other = nxt
                    else:
                        state.trans[seg] = nxt
            self.sfx_states[glob_node] = start

    def _suffix_state(self, nodes: tuple[int, ...]) -> SuffixState:
        tags: set[str] = set()
        for s in nodes:
            tags.update(self.node_derived.get(-1 - s, ()))
        return SuffixState(
            nodes, self._merge([-1 - s for s in nodes]), self._share(frozenset(tags))
        )

    def _merge(self, terminals: list[int]) -> NodeRules | None:
        """One NodeRules for the rules ending at any of terminals (shared by equal sets)."""
        node_rules = self.node_rules
        ends = [node_rules[n] for n in terminals if n in node_rules]
        if len(ends) <= 1:
            return ends[0] if ends else None
        key = tuple(n for n in terminals if n in node_rules)
        merged = self.merged.get(key)
        if merged is None:
            indexes = sorted({i for e in ends for i in e.rules})
            merged = self.merged[key] = NodeRules(
                indexes, self.policy, self.conditions, self.shared
            )
        return merged

    # -- the walk ---------------------------------------------------------------------------

    def finish(
        self, nodes: tuple[int, ...], segs: list[str]
    ) -> tuple[tuple[Packed, ...], frozenset[str], Globs]:
        """Walk the rest of a topic on the trie itself, past the prebuilt states.

        Returns what a DState would hold: its (packed) NodeRules, derived tags and open '**'.
        """
        step_lit = self.step_lit
        step_other = self.step_other
        active: Iterable[int] = nodes
        for seg in segs:
            out: set[int] = set()
            for n in active:
                nxt = step_lit[n].get(seg)
                out.update(step_other[n] if nxt is None else nxt)
            if not out:
                return (), NO_LITERALS, ()
            active = out
        node_rules = self.node_rules
        ends = tuple(node_rules[n].packed for n in active if n in node_rules)
        derived: frozenset[str] = NO_LITERALS
        if self.node_derived:
            tags = [self.node_derived[n] for n in active if n in self.node_derived]
            if tags:
                derived = frozenset().union(*tags)
        sfx = self.sfx_states
        globs = tuple((sfx[n].trans, sfx[n].other, self.glob_prefix[n]) for n in active if n in sfx)
        return ends, derived, globs

    def _state(self, nodes: tuple[int, ...]) -> DState:
        """A DState for nodes (not kept: the kept ones come from _intern)."""
        derived: frozenset[str] = NO_LITERALS
        if self.node_derived:
            tags = [self.node_derived[n] for n in nodes if n in self.node_derived]
            if tags:
                derived = self._share(frozenset().union(*tags))
        glob_sfx = self.glob_sfx
        sfx = self.sfx_states
        key = ("globs", *(n for n in nodes if n in glob_sfx))
        globs = self.shared.get(key)
        if globs is None:
            # Every state below a '**' node carries it: equal tuples shared, few and hot.
            globs = self.shared[key] = tuple(
                (sfx[n].trans, sfx[n].other, self.glob_prefix[n]) for n in nodes if n in glob_sfx
            )
        return DState(nodes, self._literals(nodes), self._merge(list(nodes)), derived, globs)

    def _intern(self, nodes: tuple[int, ...]) -> DState:
        state = self.states.get(nodes)
        if state is None:
            state = self.states[nodes] = self._state(nodes)
        return state

    def _literals(self, nodes: tuple[int, ...]) -> Container[str]:
        """The literal segments any of nodes can take, without copying large key sets."""
        maps = [self.lit[n] for n in nodes if self.lit[n]]
        if not maps:
            return NO_LITERALS
        if len(maps) == 1:
            return maps[0]  # the trie node's own dict: a shared view, never copied
        if sum(map(len, maps)) <= 16:
            return frozenset().union(*maps)
        return AnyOf(tuple(maps))

    def _build_eagerly(self) -> None:
        """Breadth first from the root, until every state is built or the budget is spent."""
        budget = max(EAGER_MIN, EAGER_FACTOR * len(self.lit))
        built = 0
        queue: deque[DState] = deque([self.start])
        seen = {self.start.nodes}
        turns = 0
        while queue:
            turns += 1
            if not turns & 255:
                checkpoint()
            state = queue.popleft()
            segs: set[str] = set()
            for n in state.nodes:
                segs.update(self.lit[n])
            if built + len(segs) + 1 > budget:
                self.complete = False
                return
            built += len(segs) + 1
            for seg in segs:
                nxt = state.trans[seg] = self._intern(self.step(state.nodes, seg))
                if nxt.nodes not in seen:
                    seen.add(nxt.nodes)
                    queue.append(nxt)
            other = self.step(state.nodes, "\x00")  # no literal: every child but literals
            nxt = state.other = self._intern(other) if other else self.dead
            if nxt.nodes not in seen:
                seen.add(nxt.nodes)
                queue.append(nxt)
        self.complete = True
