"""The automaton's states: what the topic walk reads on every segment.

A ``DState`` is one state of the determinised trie walk, a ``SuffixState`` one
state of a ``**`` node's determinised suffix trie (walked from the topic's
end); ``Glob``/``Globs`` are a state's open ``**`` nodes. engine.compiler builds
them, engine.layout copies them in walk order, engine.evaluate walks them.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

__all__ = ["NO_LITERALS", "DState", "Glob", "Globs", "SuffixState", "AnyOf"]

# One shared empty set: for states with no literal segments and no derived tags.
NO_LITERALS: frozenset[str] = frozenset()


class AnyOf:
    """Membership in any of several trie nodes' literal dicts (for large fan-outs)."""

    __slots__ = ("maps",)

    def __init__(self, maps: tuple[dict[str, int], ...]) -> None:
        self.maps = maps

    def __contains__(self, seg: object) -> bool:
        return any(seg in m for m in self.maps)


class SuffixState:
    """A state of one '**' node's determinised suffix trie, walked from the topic's end."""

    # The walk's fields first: read on every step, they share the object's first cache line.
    __slots__ = ("trans", "other", "node", "derived", "nodes")

    def __init__(self, nodes: tuple[int, ...], node: Any, derived: frozenset[str]) -> None:
        self.nodes = nodes
        self.trans: dict[str, SuffixState] = {}
        self.other: SuffixState | None = None
        self.node = node
        self.derived = derived


# The open '**' nodes of a state: per node its suffix trie root's transitions
# (the root itself is never a terminal, so no object for it), the root's
# successor on any other segment, and the number of segments before the '**'.
Glob = tuple[dict[str, SuffixState], SuffixState | None, int]
Globs = tuple[Glob, ...]


class DState:
    """A set of trie nodes reached by a topic prefix (one state of the automaton).

    node holds the rules whose patterns end in its nodes (one NodeRules for
    them all while building, its Packed form once laid out, or None), derived
    the tags of the derive_tags entries whose patterns end in its nodes.
    """

    # The walk's fields first: read on every step, they share the object's first cache line.
    __slots__ = ("trans", "other", "node", "derived", "globs", "lits", "nodes")

    def __init__(
        self,
        nodes: tuple[int, ...],
        lits: Container[str],
        node: Any,
        derived: frozenset[str],
        globs: Globs,
    ) -> None:
        self.nodes = nodes
        self.trans: dict[str, DState] = {}
        self.lits = lits
        self.other: DState | None = None
        self.node = node
        self.derived = derived
        self.globs = globs
