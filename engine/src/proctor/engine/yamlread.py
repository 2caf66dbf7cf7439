"""Read YAML into light nodes that remember their line, fast.

PyYAML's composer builds a Node with two Mark objects for every value, which
for a 100,000-rule policy (~19 MB) costs many seconds and most of a gigabyte.
Here libyaml's C parser (``yaml.CSafeLoader``) emits events and a small loop
turns them into ``YNode`` objects holding the value and the 1-based line; plain
scalars are resolved with PyYAML's own implicit-resolver table (YAML 1.1 as
``yaml.safe_load`` does it), except timestamps, which stay strings.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml import events
from yaml.resolver import Resolver

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


def read_yaml(text: str) -> YNode | None:
    """The single document of text as YNodes, None when the text holds no document."""
    loader = _Loader(text)
    try:
        return _compose(loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        parts = [p for p in (exc.context, exc.problem) if p]
        raise YamlError("YAML syntax: " + ", ".join(parts), line) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"YAML syntax: {exc}", None) from None
    finally:
        loader.dispose()


def _compose(loader: Any) -> YNode | None:
    get_event = loader.get_event
    anchors: dict[str, YNode] = {}
    stack: list[tuple[YNode, str | None]] = []
    root: YNode | None = None
    docs = 0
    pending_key: list[YNode | None] = []
    ScalarEvent = events.ScalarEvent
    MappingStartEvent = events.MappingStartEvent
    SequenceStartEvent = events.SequenceStartEvent
    SequenceEndEvent = events.SequenceEndEvent
    MappingEndEvent = events.MappingEndEvent
    AliasEvent = events.AliasEvent
    DocumentStartEvent = events.DocumentStartEvent
    StreamEndEvent = events.StreamEndEvent

    def attach(node: YNode) -> None:
        nonlocal root
        if not stack:
            root = node
            return
        parent = stack[-1][0]
        if parent.kind == SEQ:
            parent.value.append(node)
        elif pending_key[-1] is None:
            pending_key[-1] = node
        else:
            parent.value.append((pending_key[-1], node))
            pending_key[-1] = None

    while True:
        ev = get_event()
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
            attach(node)
        elif cls is MappingStartEvent or cls is SequenceStartEvent:
            kind = MAP if cls is MappingStartEvent else SEQ
            node = YNode(kind, [], ev.start_mark.line + 1)
            if ev.anchor is not None:
                anchors[ev.anchor] = node
            attach(node)
            stack.append((node, ev.anchor))
            pending_key.append(None)
        elif cls is SequenceEndEvent or cls is MappingEndEvent:
            stack.pop()
            pending_key.pop()
        elif cls is AliasEvent:
            target = anchors.get(ev.anchor)
            if target is None:
                raise YamlError(f"unknown alias *{ev.anchor}", ev.start_mark.line + 1)
            attach(target)
        elif cls is DocumentStartEvent:
            docs += 1
            if docs > 1:
                raise YamlError(
                    "a policy file holds one YAML document (found a second '---')",
                    ev.start_mark.line + 1,
                )
        elif cls is StreamEndEvent:
            return root
