"""YAML text -> validated Policy. Every mistake is a PolicyError naming file, line and rule.

This module reads the document and its rules (match conditions included); the
other sections are engine.sections, the typed field readers engine.fields.
"""

from __future__ import annotations

import hashlib
from typing import Any

from proctor.engine.errors import PolicyError
from proctor.engine.fields import MAX_TAG_CHARS, describe, parse_span
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
from proctor.engine.sections import SectionReader
from proctor.engine.yamlread import MAP, SCALAR, YamlError, YNode, read_yaml

# parse_span and MAX_TAG_CHARS moved to engine.fields; still importable from here.
__all__ = [
    "MATCH_KEYS",
    "MAX_TAG_CHARS",
    "RULE_KEYS",
    "TOP_KEYS",
    "parse_policy",
    "parse_span",
    "policy_version_of",
]

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


def policy_version_of(text: str) -> str:
    """The default policy_version: the first 12 hex digits of sha256 over the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def parse_policy(text: str, source: str = "<string>", limits: Limits = DEFAULT_LIMITS) -> Policy:
    """Validate text as a v1 policy within limits; raise PolicyError on the first mistake."""
    if len(text) > limits.max_bytes:
        raise PolicyError(
            f"the policy is larger than the limit of {limits.max_bytes} bytes ({len(text)})",
            file=source,
        )
    return _Loader(source, limits).policy(text)


class _Loader(SectionReader):
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
            self.fail(f"version must be v1, not {describe(version)}", version.line)

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
        max_depth = self.delegation(top["delegation"]) if "delegation" in top else None
        rules = self.rules(top["rules"]) if "rules" in top else ()
        budgets: tuple[Budget, ...] = ()
        if "budgets" in top:
            budgets = self.budgets(top["budgets"])
        return Policy(
            version="v1",
            policy_version=policy_version,
            combining=combining,
            default=default,
            derive_tags=derive,
            max_depth=max_depth,
            rules=rules,
            budgets=budgets,
            source=self.source,
            text=text,
        )

    def rules(self, node: YNode) -> tuple[Rule, ...]:
        """The rules list, in file order, within the rule limit; ids must be unique."""
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        items = self.seq(node, "rules")
        if len(items) > self.limits.max_rules:
            self.fail(
                f"the policy has {len(items)} rules, more than the limit of "
                f"{self.limits.max_rules}",
                node.line,
            )
        for n, item in enumerate(items):
            if not n & 255:
                checkpoint()
            rule = self.rule(item)
            if rule.id in seen:
                self.fail(f"duplicate rule id (first defined on line {seen[rule.id]})", rule.line)
            seen[rule.id] = rule.line
            rules.append(rule)
            self.rule_id = None
        return tuple(rules)

    def rule(self, node: YNode) -> Rule:
        if node.kind != MAP:
            self.fail(f"a rule must be a mapping, not {describe(node)}", node.line)
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
            kw["labels"] = self.labels(fields["labels"])
        return Match(**kw)

    def labels(self, lnode: YNode) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """match.labels: per label key (file order) the values it may take."""
        if lnode.kind != MAP:
            self.fail(f"match.labels must be a mapping, not {describe(lnode)}", lnode.line)
        labels: list[tuple[str, tuple[str, ...]]] = []
        seen: set[str] = set()
        for k, v in lnode.value:
            if k.kind != SCALAR or not isinstance(k.value, str) or not k.value:
                self.fail(f"match.labels: keys must be strings, not {describe(k)}", k.line)
            if k.value in seen:
                self.fail(f"duplicate key '{k.value}' in match.labels", k.line)
            seen.add(k.value)
            values: list[str] = []
            for item in self.seq(v, f"match.labels.{k.value}"):
                iv = item.value
                if item.kind != SCALAR or isinstance(iv, bool) or not isinstance(iv, str | int):
                    self.fail(
                        f"match.labels.{k.value}: values must be strings, "
                        f"not {describe(item)}",
                        item.line,
                    )
                if str(iv) not in values:
                    values.append(str(iv))
            if not values:
                self.fail(f"match.labels.{k.value} must list at least one value", v.line)
            labels.append((k.value, tuple(values)))
        return tuple(labels)
