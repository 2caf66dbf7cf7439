"""Read YAML into light nodes that remember their line, fast.

PyYAML's composer builds a Node with two Mark objects for every value, which
for a 100,000-rule policy (~19 MB) costs many seconds and most of a gigabyte.
Here libyaml's C parser (``yaml.CSafeLoader``) emits events and a small loop
turns them into ``YNode`` objects holding the value and the 1-based line; plain
scalars are resolved with PyYAML's own implicit-resolver table (YAML 1.1 as
``yaml.safe_load`` does it), except timestamps, which stay strings.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml import events
from yaml.resolver import Resolver

from proctor.engine.limits import checkpoint

SCALAR = 0
SEQ = 1
MAP = 2

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"

_IMPLICIT: dict[str | None, list[tuple[str, Any]]] = Resolver.yaml_implicit_resolvers
_CONSTRUCTOR = yaml.constructor.SafeConstructor()

try:  # libyaml is expected; fall back to the pure-Python parser when absent.
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader


class YNode:
    """One YAML value: kind (SCALAR, SEQ, MAP), value and 1-based line.

    value is the Python scalar, a list of YNode, or a list of (key, value) YNode pairs.
    """

    __slots__ = ("kind", "value", "line")

    def __init__(self, kind: int, value: Any, line: int) -> None:
        self.kind = kind
        self.value = value
        self.line = line


class YamlError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _construct(tag: str, value: str, line: int) -> Any:
    if tag == _STR:
        return value
    if tag == _NULL:
        return None
    if tag in (_BOOL, _INT, _FLOAT):
        node = yaml.ScalarNode(tag, value)
        try:
            return _CONSTRUCTOR.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            raise YamlError(f"bad {tag.rsplit(':', 1)[-1]} {value!r}: {exc}", line) from None
    return value  # timestamps, '=', '<<' and the like stay text


def _resolve_plain(value: str, line: int) -> Any:
    if not value:
        return None
    resolvers = _IMPLICIT.get(value[0])
    if resolvers:
        for tag, regexp in resolvers:
            if regexp.match(value):
                return _construct(tag, value, line)
    return value


def read_yaml(text: str, max_expanded: int | None = None) -> YNode | None:
    """The single document of text as YNodes, None when the text holds no document.

    Aliases are shared, not copied, but whoever reads the nodes walks a shared one
    once per alias: with max_expanded, a document whose aliases, expanded, would
    exceed that many characters is refused (the "billion laughs" and its milder
    cousins: one anchor reused by thousands of rules).
    """
    loader = _Loader(text)
    try:
        return _compose(loader, len(text), max_expanded)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        parts = [p for p in (exc.context, exc.problem) if p]
        raise YamlError("YAML syntax: " + ", ".join(parts), line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"YAML syntax: {exc}", None) from None
    finally:
        loader.dispose()


class _Open:
    """A mapping or sequence being read: where it started, what its aliases add."""

    __slots__ = ("node", "anchor", "start", "extra", "key")

    def __init__(self, node: YNode, anchor: str | None, start: int) -> None:
        self.node = node
        self.anchor = anchor
        self.start = start
        self.extra = 0  # characters its aliases add once expanded
        self.key: YNode | None = None  # a mapping's key waiting for its value


class _Composer:
    """The document being composed: its open collections, its anchors, and how far
    its aliases expand it. Takes every event but scalars (those stay inline in
    _compose's loop: they are most of a policy's events)."""

    __slots__ = ("anchors", "sizes", "stack", "root", "docs", "expanded", "limit")

    def __init__(self, length: int, max_expanded: int | None) -> None:
        self.anchors: dict[str, YNode] = {}
        # Expanded size (characters) of each complete anchored node; an anchor that is
        # still open (its own alias inside it) has none: a recursive alias.
        self.sizes: dict[str, int] = {}
        self.stack: list[_Open] = []
        self.root: YNode | None = None
        self.docs = 0
        self.expanded = length
        self.limit = sys.maxsize if max_expanded is None else max_expanded

    def attach(self, node: YNode) -> None:
        """Put node where the document is: the root, a list item, a key or a value."""
        stack = self.stack
        if not stack:
            self.root = node
            return
        top = stack[-1]
        parent = top.node
        if parent.kind == SEQ:
            parent.value.append(node)
        elif top.key is None:
            top.key = node
        else:
            parent.value.append((top.key, node))
            top.key = None

    def start(self, ev: Any, kind: int) -> None:
        """A mapping or sequence opens."""
        node = YNode(kind, [], ev.start_mark.line + 1)
        if ev.anchor is not None:
            self.anchors[ev.anchor] = node
            self.sizes.pop(ev.anchor, None)
        self.attach(node)
        self.stack.append(_Open(node, ev.anchor, ev.start_mark.index))

    def end(self, ev: Any) -> None:
        """A mapping or sequence closes: its anchor's expanded size is now known."""
        stack = self.stack
        done = stack.pop()
        if done.anchor is not None:
            self.sizes[done.anchor] = ev.end_mark.index - done.start + done.extra
        if stack and done.extra:
            stack[-1].extra += done.extra

    def alias(self, ev: Any) -> None:
        """An alias: the anchored node itself again, refused past the expansion limit."""
        line = ev.start_mark.line + 1
        target = self.anchors.get(ev.anchor)
        if target is None:
            raise YamlError(f"unknown alias *{ev.anchor}", line)
        size = self.sizes.get(ev.anchor)
        if size is None:
            raise YamlError(f"alias *{ev.anchor} is inside the node it refers to", line)
        extra = max(0, size - (ev.end_mark.index - ev.start_mark.index))
        self.expanded += extra
        if self.expanded > self.limit:
            raise YamlError(
                f"aliases expand the document past the size limit of {self.limit} bytes "
                f"(at alias *{ev.anchor})",
                line,
            )
        if self.stack:
            self.stack[-1].extra += extra
        self.attach(target)

    def document(self, ev: Any) -> None:
        """A document starts: a policy file holds one."""
        self.docs += 1
        if self.docs > 1:
            raise YamlError(
                "a policy file holds one YAML document (found a second '---')",
                ev.start_mark.line + 1,
            )


def _compose(loader: Any, length: int, max_expanded: int | None) -> YNode | None:
    doc = _Composer(length, max_expanded)
    get_event = loader.get_event
    attach = doc.attach
    anchors = doc.anchors
    sizes = doc.sizes
    count = 0
    ScalarEvent = events.ScalarEvent
    MappingStartEvent = events.MappingStartEvent
    SequenceStartEvent = events.SequenceStartEvent
    SequenceEndEvent = events.SequenceEndEvent
    MappingEndEvent = events.MappingEndEvent
    AliasEvent = events.AliasEvent
    DocumentStartEvent = events.DocumentStartEvent
    StreamEndEvent = events.StreamEndEvent

    while True:
        ev = get_event()
        count += 1
        if not count & 4095:
            checkpoint()
        cls = type(ev)
        if cls is ScalarEvent:
            line = ev.start_mark.line + 1
            if ev.tag is None or ev.tag == "!":
                if not ev.style and ev.implicit[0]:
                    value = _resolve_plain(ev.value, line)
                else:
                    value = ev.value
            else:
                value = _construct(ev.tag, ev.value, line)
            node = YNode(SCALAR, value, line)
            if ev.anchor is not None:
                anchors[ev.anchor] = node
                sizes[ev.anchor] = ev.end_mark.index - ev.start_mark.index
            attach(node)
        elif cls is MappingStartEvent:
            doc.start(ev, MAP)
        elif cls is SequenceStartEvent:
            doc.start(ev, SEQ)
        elif cls is SequenceEndEvent or cls is MappingEndEvent:
            doc.end(ev)
        elif cls is AliasEvent:
            doc.alias(ev)
        elif cls is DocumentStartEvent:
            doc.document(ev)
        elif cls is StreamEndEvent:
            return doc.root
