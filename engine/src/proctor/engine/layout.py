"""The compiled automaton as evaluation reads it, laid out in walk order.

Building the automaton allocates its objects in rule and breadth-first
order, mixed with the builder's own tables; at 100,000 rules one evaluation
then touches a few dozen objects spread over hundreds of MiB, and nearly
every one is a cache and TLB miss. relocate() copies what evaluation reads
(states, their transition dicts, NodeRules, suffix tries, the rules'
Decisions) depth first from the start state, so the objects one topic's
walk touches were allocated together and sit on a few pages; the builder's
tables are then dropped. Copies keep the originals' sharing (a NodeRules,
a glob tuple or a suffix trie used by many states is copied once).

What decides the cost at that scale is how many distinct objects one
evaluation touches, more than where they lie, so the copy also merges: a
NodeRules becomes one Packed tuple holding its Conditions and Decisions (and
the Decisions with the state's derived tags), equal tag masks are shared,
and a '**' entry holds its suffix root's transitions rather than the root.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proctor.engine.compiler import Automaton
from proctor.engine.limits import checkpoint
from proctor.engine.model import Decision
from proctor.engine.rules import NodeRules, Packed
from proctor.engine.states import NO_LITERALS, DState, Glob, Globs, SuffixState


class _Copier:
    def __init__(
        self,
        decision_of: Callable[[int], Decision],
        with_derived: Callable[[Decision, tuple[str, ...]], Decision],
    ) -> None:
        self.decision_of = decision_of
        self.with_derived = with_derived
        self.nodes: dict[tuple[int, frozenset[str]], Packed] = {}
        self.sorted: dict[frozenset[str], tuple[str, ...]] = {}
        self.tagmasks: dict[Any, Any] = {}
        self.segments: dict[str, str] = {}
        self.suffixes: dict[int, SuffixState] = {}
        self.globs: dict[int, Globs] = {}
        self.triples: dict[tuple[int, int], Glob] = {}
        self.keep: list[object] = []  # the originals, so that ids stay unique while copying

    def node(self, old: NodeRules | None, derived: frozenset[str] = NO_LITERALS) -> Packed | None:
        """old packed; with the Decisions carrying derived when a state adds those tags."""
        if old is None:
            return None
        new = self.nodes.get((id(old), derived))
        if new is None:
            self.keep.append(old)
            decisions = [self.decision_of(i) for i in old.rules]
            if not derived:
                new = old.pack(decisions, shared=self.tagmasks)
            else:
                tags = self.sorted.get(derived)
                if tags is None:
                    tags = self.sorted[derived] = tuple(sorted(derived))
                variants = [self.with_derived(d, tags) for d in decisions]
                new = old.pack(decisions, tags, variants, self.tagmasks)
            self.nodes[(id(old), derived)] = new
        return new

    def suffix(self, old: SuffixState) -> SuffixState:
        new = self.suffixes.get(id(old))
        if new is not None:
            return new
        self.keep.append(old)
        new = self.suffixes[id(old)] = SuffixState((), self.node(old.node), old.derived)
        # Sized once here; the values are set below, without growing the table.
        new.trans = self.trans(old.trans)
        for seg, child in old.trans.items():
            new.trans[seg] = self.suffix(child)
        if old.other is not None:
            new.other = self.suffix(old.other)
        return new

    def trans(self, old: dict[str, Any]) -> dict[str, Any]:
        """A table with old's keys, sized once here; its values are set afterwards.

        The keys are fresh copies, made once per distinct segment: a lookup
        whose hash matches reads the key object, and the interned originals
        lie scattered where the policy text was parsed, while these copies
        sit together (at 100,000 rules, a few hundred KiB that stay in cache).
        """
        if not old:
            return _NO_TRANS
        segments = self.segments
        out: dict[str, Any] = {}
        for seg in old:
            key = segments.get(seg)
            if key is None:
                key = segments[seg] = seg.encode().decode()
            out[key] = None
        return out

    def glob_tuple(self, old: Globs) -> Globs:
        new = self.globs.get(id(old))
        if new is None:
            self.keep.append(old)
            new = self.globs[id(old)] = tuple(map(self.glob, old))
        return new

    def glob(self, old: Glob) -> Glob:
        # Shared: the fleet-wide '**' entries recur in every state's tuple and stay hot.
        trans, other, before = old
        new = self.triples.get((id(trans), before))
        if new is None:
            self.keep.append(old)
            copied = self.trans(trans)
            for seg, child in trans.items():
                copied[seg] = self.suffix(child)
            new = (copied, None if other is None else self.suffix(other), before)
            self.triples[(id(trans), before)] = new
        return new


# Never mutated: the transitions of every state without literal transitions, one
# object (always in cache) instead of an empty dict per state.
_NO_TRANS: dict[str, Any] = {}


def relocate(
    auto: Automaton,
    make_decision: Callable[[int], Decision],
    with_derived: Callable[[Decision, tuple[str, ...]], Decision],
) -> tuple[DState, dict[int, Decision]]:
    """Copy auto's complete automaton in depth-first order and drop the original.

    Returns the new start state and the Decisions made for the rules it uses.
    """
    if not auto.complete:
        raise ValueError("only a complete automaton can be relocated")
    start, made = _copy(auto.start, make_decision, with_derived)
    auto.release(start)
    return start, made


def _copy(
    start: DState,
    make_decision: Callable[[int], Decision],
    with_derived: Callable[[Decision, tuple[str, ...]], Decision],
) -> tuple[DState, dict[int, Decision]]:
    made: dict[int, Decision] = {}

    def decision_of(index: int) -> Decision:
        found = made.get(index)
        if found is None:
            found = made[index] = make_decision(index)
        return found

    copier = _Copier(decision_of, with_derived)
    copies: dict[int, DState] = {}
    pairs: list[tuple[DState, DState]] = []
    stack = [start]
    while stack:
        old = stack.pop()
        if id(old) in copies:
            continue
        if not len(pairs) & 1023:
            checkpoint()
        new = DState(
            (),
            NO_LITERALS,
            copier.node(old.node, old.derived),
            old.derived,
            copier.glob_tuple(old.globs),
        )
        new.trans = copier.trans(old.trans)
        copies[id(old)] = new
        pairs.append((old, new))
        children = [*old.trans.values()]
        if old.other is not None:
            children.append(old.other)
        # Reversed: the first child is copied next, so a path's states follow each other.
        stack.extend(c for c in reversed(children) if id(c) not in copies)
    for old, new in pairs:
        trans = new.trans
        for seg, child in old.trans.items():
            trans[seg] = copies[id(child)]
        if old.other is not None:
            new.other = copies[id(old.other)]
    for old, _ in pairs:
        # The states form cycles ('**' loops): unlinked, they are freed at once
        # rather than by a full garbage collection of the whole heap later.
        old.trans = _NO_TRANS
        old.other = None
    return copies[id(start)], made


def pack_in_place(
    auto: Automaton, made: dict[int, Decision], make_decision: Callable[[int], Decision]
) -> None:
    """Give a partly built automaton's states the Packed form of their NodeRules."""

    def decision_of(index: int) -> Decision:
        found = made.get(index)
        if found is None:
            found = made[index] = make_decision(index)
        return found

    for node in (*auto.node_rules.values(), *auto.merged.values()):
        node.packed = node.pack(map(decision_of, node.rules))
    for state in auto.states.values():
        if state.node is not None:
            state.node = state.node.packed
    seen: set[int] = set()
    stack = list(auto.sfx_states.values())
    while stack:
        sfx = stack.pop()
        if id(sfx) in seen:
            continue
        seen.add(id(sfx))
        if sfx.node is not None:
            sfx.node = sfx.node.packed
        stack.extend(sfx.trans.values())
        if sfx.other is not None:
            stack.append(sfx.other)
