"""YAML text -> validated Policy. Every mistake is a PolicyError naming file, line and rule."""

from __future__ import annotations

import hashlib
import re
from typing import Any, NoReturn

from proctor.engine.errors import PolicyError
from proctor.engine.limits import DEFAULT_LIMITS, Limits, checkpoint
from proctor.engine.model import (
    COMBININGS,
    DECISIONS,
    DEFAULT_APPROVAL_TTL_SECONDS,
    DENY_OVERRIDES,
    REQUIRE_APPROVAL,
    RESERVED_RULE_IDS,
    Budget,
    Default,
    DeriveTags,
    Match,
    Policy,
    Rule,
)
from proctor.engine.topics import parse_pattern
from proctor.engine.yamlread import MAP, SCALAR, SEQ, YamlError, YNode, read_yaml

TOP_KEYS = (
    "version",
    "policy_version",
    "combining",
    "default",
    "derive_tags",
    "delegation",
    "rules",
    "budgets",
)
RULE_KEYS = ("id", "match", "decision", "reason", "approvers", "approval_ttl")
MATCH_KEYS = (
    "topics",
    "risk_tags",
    "risk_tags_all",
    "agents",
    "chain",
    "tenants",
    "depth",
    "labels",
)
DEFAULT_KEYS = ("decision", "reason", "approval_ttl")
DERIVE_KEYS = ("topics", "add")
DELEGATION_KEYS = ("max_depth",)
BUDGET_KEYS = ("id", "unit", "limit", "window", "scope", "kind")
BUDGET_WINDOWS = ("none", "minute", "hour", "day", "month")
BUDGET_SCOPES = ("fleet", "tenant", "agent", "run")
BUDGET_KINDS = ("spend", "concurrency")
MAX_TAG_CHARS = 64

_SPAN_RE = re.compile(r"([0-9]{1,9})([smhd])")
_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

_KIND_NAMES = {SCALAR: "a scalar", SEQ: "a list", MAP: "a mapping"}


def policy_version_of(text: str) -> str:
    """The default policy_version: the first 12 hex digits of sha256 over the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def parse_span(spec: str) -> int | None:
    """Seconds in a span such as "90s", "30m", "6h", "2d"; None when it is not one."""
    m = _SPAN_RE.fullmatch(spec)
    if m is None:
        return None
    return int(m.group(1)) * _SPAN_UNITS[m.group(2)]


def parse_policy(text: str, source: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> Policy:
    """Validate text as a v1 policy within limits; raise PolicyError on the first mistake."""
    if len(text) > limits.max_bytes:
        raise PolicyError(
            f"the policy is larger than the limit of {limits.max_bytes} bytes ({len(text)})",
            file=source,
        )
    return _Loader(source, limits).policy(text)


def _describe(node: YNode) -> str:
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


class _Loader:
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
            self.fail(f"{what} must be a mapping, not {_describe(node)}", node.line)
        out: dict[str, YNode] = {}
        for k, v in node.value:
            if k.kind != SCALAR or not isinstance(k.value, str):
                self.fail(f"{what}: keys must be strings, not {_describe(k)}", k.line)
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
            self.fail(f"{what} must be a string, not {_describe(node)}", node.line)
        value: str = node.value
        if not value.strip():
            self.fail(f"{what} must not be empty", node.line)
        if len(value) > max_chars:
            self.fail(f"{what} is longer than {max_chars} characters ({len(value)})", node.line)
        return value

    def integer(self, node: YNode, what: str, minimum: int) -> int:
        v = node.value
        if node.kind != SCALAR or not isinstance(v, int) or isinstance(v, bool):
            self.fail(f"{what} must be a whole number, not {_describe(node)}", node.line)
        if v < minimum:
            self.fail(f"{what} must be at least {minimum} (got {v})", node.line)
        return int(v)

    def seq(self, node: YNode, what: str) -> list[YNode]:
        if node.kind != SEQ:
            self.fail(f"{what} must be a list, not {_describe(node)}", node.line)
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
            f"{what} must be a positive duration such as 90s, 30m, 1h or 2d, not {_describe(node)}",
            node.line,
        )

    def choice(self, node: YNode, what: str, allowed: tuple[str, ...]) -> str:
        if node.kind != SCALAR or not isinstance(node.value, str) or node.value not in allowed:
            self.fail(
                f"{what} must be one of {', '.join(allowed)}, not {_describe(node)}", node.line
            )
        value: str = node.value
        return value

    # -- the document -------------------------------------------------------------------

    def policy(self, text: str) -> Policy:
        try:
            root = read_yaml(text, self.limits.max_bytes)
        except YamlError as exc:
            self.fail(exc.message, exc.line)
        if root is None or (root.kind == SCALAR and root.value is None):
            self.fail("the policy is empty (expected a mapping with 'version: v1')", None)
        top = self.mapping(root, "the policy", TOP_KEYS)
        for key in ("rules", "budgets", "derive_tags", "delegation"):
            # An empty section ("rules:" with nothing under it) is an empty one.
            if key in top and top[key].kind == SCALAR and top[key].value is None:
                del top[key]
        if "version" not in top:
            self.fail("missing required key 'version' (expected 'version: v1')", root.line)
        version = top["version"]
        if version.kind != SCALAR or version.value != "v1":
            self.fail(f"version must be v1, not {_describe(version)}", version.line)

        if "policy_version" in top:
            policy_version = self.string(top["policy_version"], "policy_version", 128)
        else:
            policy_version = policy_version_of(text)
        combining = DENY_OVERRIDES
        if "combining" in top:
            combining = self.choice(top["combining"], "combining", COMBININGS)
        default = self.default(top["default"]) if "default" in top else Default()
        derive: tuple[DeriveTags, ...] = ()
        if "derive_tags" in top:
            derive = tuple(self.derive(n) for n in self.seq(top["derive_tags"], "derive_tags"))
        max_depth: int | None = None
        if "delegation" in top:
            fields = self.mapping(top["delegation"], "delegation", DELEGATION_KEYS)
            if "max_depth" in fields:
                max_depth = self.integer(fields["max_depth"], "delegation.max_depth", 0)
        rules: list[Rule] = []
        if "rules" in top:
            seen: dict[str, int] = {}
            items = self.seq(top["rules"], "rules")
            if len(items) > self.limits.max_rules:
                self.fail(
                    f"the policy has {len(items)} rules, more than the limit of "
                    f"{self.limits.max_rules}",
                    top["rules"].line,
                )
            for n, item in enumerate(items):
                if not n & 255:
                    checkpoint()
                rule = self.rule(item)
                if rule.id in seen:
                    self.fail(
                        f"duplicate rule id (first defined on line {seen[rule.id]})", rule.line
                    )
                seen[rule.id] = rule.line
                rules.append(rule)
                self.rule_id = None
        budgets: list[Budget] = []
        if "budgets" in top:
            seen_budgets: dict[str, int] = {}
            for item in self.seq(top["budgets"], "budgets"):
                budget = self.budget(item)
                if budget.id in seen_budgets:
                    self.fail(
                        f"duplicate budget id '{budget.id}' "
                        f"(first defined on line {seen_budgets[budget.id]})",
                        budget.line,
                    )
                seen_budgets[budget.id] = budget.line
                budgets.append(budget)
        return Policy(
            version="v1",
            policy_version=policy_version,
            combining=combining,
            default=default,
            derive_tags=derive,
            max_depth=max_depth,
            rules=tuple(rules),
            budgets=tuple(budgets),
            source=self.source,
            text=text,
        )

    def default(self, node: YNode) -> Default:
        fields = self.mapping(node, "default", DEFAULT_KEYS)
        if "decision" not in fields:
            self.fail("default: missing required key 'decision'", node.line)
        decision = self.choice(fields["decision"], "default.decision", DECISIONS)
        reason = "no rule matched"
        if "reason" in fields:
            reason = self.string(fields["reason"], "default.reason")
        ttl = DEFAULT_APPROVAL_TTL_SECONDS
        if "approval_ttl" in fields:
            if decision != REQUIRE_APPROVAL:
                self.fail(
                    "default.approval_ttl is only allowed when the default decision is "
                    "require_approval",
                    fields["approval_ttl"].line,
                )
            ttl = self.span(fields["approval_ttl"], "default.approval_ttl")
        return Default(decision=decision, reason=reason, approval_ttl_seconds=ttl)

    def derive(self, node: YNode) -> DeriveTags:
        fields = self.mapping(node, "derive_tags entry", DERIVE_KEYS)
        for key in DERIVE_KEYS:
            if key not in fields:
                self.fail(f"derive_tags entry: missing required key '{key}'", node.line)
        topics = self.patterns(fields["topics"], "derive_tags.topics")
        add = self.tags(fields["add"], "derive_tags.add")
        if not add:
            self.fail("derive_tags.add must list at least one tag", fields["add"].line)
        return DeriveTags(topics=topics, add=add, line=node.line)

    def rule(self, node: YNode) -> Rule:
        if node.kind != MAP:
            self.fail(f"a rule must be a mapping, not {_describe(node)}", node.line)
        # Find the id first so that every later error can name the rule.
        for k, v in node.value:
            if k.kind == SCALAR and k.value == "id":
                if v.kind == SCALAR and isinstance(v.value, str) and v.value.strip():
                    self.rule_id = v.value
                break
        fields = self.mapping(node, "rule", RULE_KEYS)
        if "id" not in fields:
            self.fail("rule: missing required key 'id'", node.line)
        rule_id = self.string(fields["id"], "rule id", 128)
        if rule_id != rule_id.strip():
            self.fail("rule id must not start or end with spaces", fields["id"].line)
        if rule_id in RESERVED_RULE_IDS:
            self.fail(f"rule id '{rule_id}' is reserved", fields["id"].line)
        for key in ("match", "decision"):
            if key not in fields:
                self.fail(f"missing required key '{key}'", node.line)
        match = self.match(fields["match"])
        decision = self.choice(fields["decision"], "decision", DECISIONS)
        if "reason" in fields:
            reason = self.string(fields["reason"], "reason")
        elif decision == "allow":
            reason = ""
        else:
            self.fail(f"a {decision} rule needs a reason", node.line)
        approvers: tuple[str, ...] = ()
        ttl = DEFAULT_APPROVAL_TTL_SECONDS
        for key in ("approvers", "approval_ttl"):
            if key in fields and decision != REQUIRE_APPROVAL:
                self.fail(
                    f"{key} is only allowed on require_approval rules (this rule is {decision})",
                    fields[key].line,
                )
        if "approvers" in fields:
            approvers = self.strings(fields["approvers"], "approvers", 128)
        if "approval_ttl" in fields:
            ttl = self.span(fields["approval_ttl"], "approval_ttl")
        return Rule(
            id=rule_id,
            match=match,
            decision=decision,
            reason=reason,
            approvers=approvers,
            approval_ttl_seconds=ttl,
            line=node.line,
        )

    def match(self, node: YNode) -> Match:
        fields = self.mapping(node, "match", MATCH_KEYS)
        if "topics" not in fields:
            self.fail("match: missing required key 'topics'", node.line)
        kw: dict[str, Any] = {"topics": self.patterns(fields["topics"], "match.topics")}
        for key in ("risk_tags", "risk_tags_all"):
            if key in fields:
                kw[key] = self.tags(fields[key], f"match.{key}")
        for key in ("agents", "chain", "tenants"):
            if key in fields:
                kw[key] = self.strings(fields[key], f"match.{key}", 128)
        if "depth" in fields:
            depth = self.mapping(fields["depth"], "match.depth", ("min", "max"))
            lo = self.integer(depth["min"], "match.depth.min", 0) if "min" in depth else None
            hi = self.integer(depth["max"], "match.depth.max", 0) if "max" in depth else None
            if lo is not None and hi is not None and lo > hi:
                self.fail(f"match.depth: min ({lo}) is above max ({hi})", fields["depth"].line)
            kw["depth_min"], kw["depth_max"] = lo, hi
        if "labels" in fields:
            lnode = fields["labels"]
            if lnode.kind != MAP:
                self.fail(f"match.labels must be a mapping, not {_describe(lnode)}", lnode.line)
            labels: list[tuple[str, tuple[str, ...]]] = []
            seen: set[str] = set()
            for k, v in lnode.value:
                if k.kind != SCALAR or not isinstance(k.value, str) or not k.value:
                    self.fail(f"match.labels: keys must be strings, not {_describe(k)}", k.line)
                if k.value in seen:
                    self.fail(f"duplicate key '{k.value}' in match.labels", k.line)
                seen.add(k.value)
                values: list[str] = []
                for item in self.seq(v, f"match.labels.{k.value}"):
                    iv = item.value
                    if item.kind != SCALAR or isinstance(iv, bool) or not isinstance(iv, str | int):
                        self.fail(
                            f"match.labels.{k.value}: values must be strings, "
                            f"not {_describe(item)}",
                            item.line,
                        )
                    if str(iv) not in values:
                        values.append(str(iv))
                if not values:
                    self.fail(f"match.labels.{k.value} must list at least one value", v.line)
                labels.append((k.value, tuple(values)))
            kw["labels"] = tuple(labels)
        return Match(**kw)

    def budget(self, node: YNode) -> Budget:
        fields = self.mapping(node, "budget", BUDGET_KEYS)
        for key in ("id", "unit", "limit"):
            if key not in fields:
                self.fail(f"budget: missing required key '{key}'", node.line)
        bid = self.string(fields["id"], "budget id", 128)
        try:
            unit = self.string(fields["unit"], f"budget '{bid}': unit", 64)
            limit = self.integer(fields["limit"], f"budget '{bid}': limit", 1)
            window, seconds, spec = "none", 0, "none"
            if "window" in fields:
                w = fields["window"]
                text = w.value.strip() if w.kind == SCALAR and isinstance(w.value, str) else None
                if text in BUDGET_WINDOWS:
                    window = spec = str(text)
                elif text is not None and (parse_span(text) or 0) > 0:
                    window, seconds, spec = "fixed", parse_span(text) or 0, text
                else:
                    self.fail(
                        f"budget '{bid}': window must be none, minute, hour, day, month or a "
                        f"span such as 30s, 15m, 6h, 2d, not {_describe(w)}",
                        w.line,
                    )
            scope = "fleet"
            if "scope" in fields:
                scope = self.choice(fields["scope"], f"budget '{bid}': scope", BUDGET_SCOPES)
            kind = "spend"
            if "kind" in fields:
                kind = self.choice(fields["kind"], f"budget '{bid}': kind", BUDGET_KINDS)
        finally:
            self.rule_id = None
        return Budget(
            id=bid,
            unit=unit,
            limit=limit,
            window=window,
            window_seconds=seconds,
            window_spec=spec,
            scope=scope,
            kind=kind,
            line=node.line,
        )
