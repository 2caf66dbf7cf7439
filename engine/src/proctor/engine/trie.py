"""The segment trie of every topic pattern, with its suffix tries: what the automaton is built from.

Every topic pattern (of rules and of derive_tags) goes into one segment
trie: literal children in a dict, a ``*`` child, and a ``**`` child that
loops on itself (patterns are first made canonical, so no two ``**`` are
adjacent). A pattern whose one inner ``**`` is followed only by literals
and ``*`` (``**.delete``, ``job.*.**.export``, the common case) stops at its
``**`` node: what follows goes, reversed, into that node's suffix trie, which
is matched against the topic's last segments once the walk is done. So an
open ``**`` never carries children along the walk, and the automaton (engine.compiler)
stays about the size of the trie instead of multiplying by every segment
that may follow a ``**``. Patterns with two inner ``**`` stay whole in the
trie (the ``**`` node then has children, and the walk handles them).

Trie nodes are ints indexing parallel lists (``lit``, ``star``, ``glob``,
``is_glob``); suffix trie nodes likewise (``sfx_lit``, ``sfx_star``). Once
every pattern is in, ``_build_steps`` precomputes each node's successors, so
one step of the walk over the trie is one dict lookup per node.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from proctor.engine.topics import GLOBSTAR, STAR, canonical, parse_pattern

__all__ = ["PatternTrie"]


class PatternTrie:
    """Topic patterns as a segment trie; '**' tails split off into suffix tries."""

    def __init__(self, split_suffixes: bool = True) -> None:
        self.split_suffixes = split_suffixes
        self.lit: list[dict[str, int]] = [{}]
        self.star: list[int] = [-1]
        self.glob: list[int] = [-1]
        self.is_glob: list[bool] = [False]
        # Suffix tries: the part of a pattern after its only inner '**', reversed.
        self.sfx_lit: list[dict[str, int]] = []
        self.sfx_star: list[int] = []
        self.glob_sfx: dict[int, int] = {}  # '**' trie node -> its suffix trie root
        self.glob_prefix: dict[int, int] = {}  # '**' trie node -> segments before it

    def _new_node(self, is_glob: bool) -> int:
        self.lit.append({})
        self.star.append(-1)
        self.glob.append(-1)
        self.is_glob.append(is_glob)
        return len(self.lit) - 1

    def _insert(self, pattern: str) -> int:
        """Add pattern; return its terminal: a trie node, or -1 - a suffix trie node.

        A pattern whose only inner '**' is followed by literals and '*' (such as
        ``job.*.**.export`` or ``**.delete``) goes into the trie up to the '**'
        and into that node's suffix trie, reversed, after it: the topic's tail
        is matched against the suffix once, at the end of the walk. So the
        '**' node has no children in the trie and an open '**' does not
        multiply the automaton's states by the segments that may follow it.
        """
        segs = canonical(parse_pattern(pattern))
        suffix: tuple[str, ...] = ()
        if self.split_suffixes and GLOBSTAR in segs:
            k = segs.index(GLOBSTAR)
            rest = segs[k + 1 :]
            if rest and GLOBSTAR not in rest:
                segs, suffix = segs[: k + 1], rest
        # Interned: the automaton's keys are then one object per distinct segment.
        segs = tuple(map(sys.intern, segs))
        node = 0
        for seg in segs:
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
        if not suffix:
            return node
        s = self.glob_sfx.get(node)
        if s is None:
            s = self.glob_sfx[node] = self._new_suffix_node()
            self.glob_prefix[node] = len(segs) - 1
        for seg in reversed(suffix):
            if seg == STAR:
                child = self.sfx_star[s]
                if child < 0:
                    child = self.sfx_star[s] = self._new_suffix_node()
            else:
                child = self.sfx_lit[s].get(seg, -1)
                if child < 0:
                    child = self.sfx_lit[s][seg] = self._new_suffix_node()
            s = child
        return -1 - s

    def _new_suffix_node(self) -> int:
        self.sfx_lit.append({})
        self.sfx_star.append(-1)
        return len(self.sfx_lit) - 1

    def _closure(self, node: int) -> list[int]:
        """node and the '**' nodes reachable from it by consuming no segment."""
        out = [node]
        while self.glob[node] >= 0:
            node = self.glob[node]
            out.append(node)
        return out

    # -- steps over the trie ----------------------------------------------------------------

    def _build_steps(self) -> None:
        """Per trie node: its successors on each literal segment, and on any other segment."""
        empty: dict[str, tuple[int, ...]] = {}
        self.step_lit: list[dict[str, tuple[int, ...]]] = []
        self.step_other: list[tuple[int, ...]] = []
        for n in range(len(self.lit)):
            other: list[int] = []
            if self.star[n] >= 0:
                other.extend(self._closure(self.star[n]))
            if self.is_glob[n]:
                other.append(n)
            self.step_other.append(tuple(other))
            if self.lit[n]:
                self.step_lit.append(
                    {seg: (*self._closure(c), *other) for seg, c in self.lit[n].items()}
                )
            else:
                self.step_lit.append(empty)

    def step(self, nodes: Iterable[int], seg: str) -> tuple[int, ...]:
        """The trie nodes reached from nodes by one segment (sorted, no duplicates)."""
        step_lit = self.step_lit
        step_other = self.step_other
        out: set[int] = set()
        for n in nodes:
            nxt = step_lit[n].get(seg)
            out.update(step_other[n] if nxt is None else nxt)
        return tuple(sorted(out))
