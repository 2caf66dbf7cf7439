"""Typed readers of policy fields: YAML nodes -> checked Python values, or a PolicyError.

`FieldReader` is the base of the policy loader: every reader names the field
it reads, so a mistake is reported with the file, line and rule it sits in.
It also counts topic patterns and their segments against the policy's limits.
"""

from __future__ import annotations

import re
from typing import NoReturn

from proctor.engine.errors import PolicyError
from proctor.engine.limits import DEFAULT_LIMITS, Limits
from proctor.engine.topics import parse_pattern
from proctor.engine.yamlread import MAP, SCALAR, SEQ, YNode

MAX_TAG_CHARS = 64

_SPAN_RE = re.compile(r"([0-9]{1,9})([smhd])")
_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_KIND_NAMES = {SCALAR: "a scalar", SEQ: "a list", MAP: "a mapping"}


def parse_span(spec: str) -> int | None:
    """Seconds in a span such as "90s", "30m", "6h", "2d"; None when it is not one."""
    m = _SPAN_RE.fullmatch(spec)
    if m is None:
        return None
    return int(m.group(1)) * _SPAN_UNITS[m.group(2)]


def describe(node: YNode) -> str:
    """What node is, for an error message: its kind, or a scalar's type and value."""
    if node.kind == SCALAR:
        v = node.value
        if v is None:
            return "nothing (null)"
        if isinstance(v, bool):
            return f"a boolean ({str(v).lower()}; quote it if you meant text)"
        if isinstance(v, int):
            return f"a number ({v})"
        if isinstance(v, float):
            return f"a number ({v})"
        return f"a string ({v!r})"
    return _KIND_NAMES[node.kind]


class FieldReader:
    """Reads the fields of one policy file; `rule_id` names the rule being read, if any."""

    def __init__(self, source: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.source = source
        self.limits = limits
        self.rule_id: str | None = None
        self.pattern_count = 0
        self.segment_count = 0
        # id(node) -> (patterns, segments) of each topics list already validated
        self.checked: dict[int, tuple[tuple[str, ...], int]] = {}

    # -- errors -------------------------------------------------------------------------

    def fail(self, message: str, line: int | None) -> NoReturn:
        raise PolicyError(message, file=self.source, line=line, rule_id=self.rule_id)

    # -- typed readers --------------------------------------------------------------------

    def mapping(self, node: YNode, what: str, keys: tuple[str, ...]) -> dict[str, YNode]:
        if node.kind != MAP:
            self.fail(f"{what} must be a mapping, not {describe(node)}", node.line)
        out: dict[str, YNode] = {}
        for k, v in node.value:
            if k.kind != SCALAR or not isinstance(k.value, str):
                self.fail(f"{what}: keys must be strings, not {describe(k)}", k.line)
            key = k.value
            if key not in keys:
                self.fail(
                    f"unknown key '{key}' in {what} (expected one of: {', '.join(keys)})", k.line
                )
            if key in out:
                self.fail(f"duplicate key '{key}' in {what}", k.line)
            out[key] = v
        return out

    def string(self, node: YNode, what: str, max_chars: int = 1024) -> str:
        if node.kind != SCALAR or not isinstance(node.value, str):
            self.fail(f"{what} must be a string, not {describe(node)}", node.line)
        value: str = node.value
        if not value.strip():
            self.fail(f"{what} must not be empty", node.line)
        if len(value) > max_chars:
            self.fail(f"{what} is longer than {max_chars} characters ({len(value)})", node.line)
        return value

    def integer(self, node: YNode, what: str, minimum: int) -> int:
        v = node.value
        if node.kind != SCALAR or not isinstance(v, int) or isinstance(v, bool):
            self.fail(f"{what} must be a whole number, not {describe(node)}", node.line)
        if v < minimum:
            self.fail(f"{what} must be at least {minimum} (got {v})", node.line)
        return int(v)

    def seq(self, node: YNode, what: str) -> list[YNode]:
        if node.kind != SEQ:
            self.fail(f"{what} must be a list, not {describe(node)}", node.line)
        items: list[YNode] = node.value
        return items

    def strings(self, node: YNode, what: str, max_chars: int = 256) -> tuple[str, ...]:
        # A dict keeps file order and drops repeats in O(1) each (a list would be O(n^2)).
        out: dict[str, None] = {}
        for item in self.seq(node, what):
            out[self.string(item, f"{what} entry", max_chars)] = None
        return tuple(out)

    def tags(self, node: YNode, what: str) -> tuple[str, ...]:
        out: dict[str, None] = {}
        for item in self.seq(node, what):
            value = self.string(item, f"{what} entry", MAX_TAG_CHARS + 64).strip().lower()
            if len(value) > MAX_TAG_CHARS:
                self.fail(
                    f"{what} entry {value!r} is longer than {MAX_TAG_CHARS} characters",
                    item.line,
                )
            out[value] = None
        return tuple(out)

    def patterns(self, node: YNode, what: str) -> tuple[str, ...]:
        # A list reused through a YAML alias is one node: validated once, counted each time.
        done = self.checked.get(id(node))
        if done is None:
            done = self.checked[id(node)] = self._patterns(node, what)
        patterns, segments = done
        self.count_patterns(len(patterns), segments, node.line)
        return patterns

    def _patterns(self, node: YNode, what: str) -> tuple[tuple[str, ...], int]:
        out: dict[str, None] = {}
        items = self.seq(node, what)
        if not items:
            self.fail(f"{what} must list at least one topic pattern", node.line)
        segments = 0
        for item in items:
            pattern = self.string(item, f"{what} entry")
            try:
                parsed = parse_pattern(pattern)
            except ValueError as exc:
                self.fail(str(exc), item.line)
            if pattern not in out:
                out[pattern] = None
                segments += len(parsed)
                if len(out) + self.pattern_count > self.limits.max_patterns:
                    self.count_patterns(len(out), segments, item.line)  # fails
        return tuple(out), segments

    def count_patterns(self, patterns: int, segments: int, line: int) -> None:
        limits = self.limits
        self.pattern_count += patterns
        self.segment_count += segments
        if self.pattern_count > limits.max_patterns:
            self.fail(f"the policy has more than {limits.max_patterns} topic patterns", line)
        if self.segment_count > limits.max_pattern_segments:
            self.fail(
                f"the policy's topic patterns have more than {limits.max_pattern_segments} "
                "segments in all",
                line,
            )

    def span(self, node: YNode, what: str) -> int:
        v = node.value
        if node.kind == SCALAR and isinstance(v, int) and not isinstance(v, bool):
            if v <= 0:
                self.fail(f"{what} must be positive (got {v})", node.line)
            return int(v)
        if node.kind == SCALAR and isinstance(v, str):
            seconds = parse_span(v.strip())
            if seconds is not None and seconds > 0:
                return seconds
        self.fail(
            f"{what} must be a positive duration such as 90s, 30m, 1h or 2d, not {describe(node)}",
            node.line,
        )

    def choice(self, node: YNode, what: str, allowed: tuple[str, ...]) -> str:
        if node.kind != SCALAR or not isinstance(node.value, str) or node.value not in allowed:
            self.fail(
                f"{what} must be one of {', '.join(allowed)}, not {describe(node)}", node.line
            )
        value: str = node.value
        return value
