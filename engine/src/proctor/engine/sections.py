"""The policy's sections beside its rules: default, derive_tags, delegation and budgets.

`SectionReader` reads each section into its model type (engine.model) with the
typed readers of engine.fields; the policy loader (engine.loader) reads the
document and its rules on top of it.
"""

from __future__ import annotations

from proctor.engine.fields import FieldReader, describe, parse_span
from proctor.engine.model import (
    DECISIONS,
    DEFAULT_APPROVAL_TTL_SECONDS,
    REQUIRE_APPROVAL,
    Budget,
    Default,
    DeriveTags,
)
from proctor.engine.yamlread import SCALAR, YNode

DEFAULT_KEYS = ("decision", "reason", "approval_ttl")
DERIVE_KEYS = ("topics", "add")
DELEGATION_KEYS = ("max_depth",)
BUDGET_KEYS = ("id", "unit", "limit", "window", "scope", "kind")
BUDGET_WINDOWS = ("none", "minute", "hour", "day", "month")
BUDGET_SCOPES = ("fleet", "tenant", "agent", "run")
BUDGET_KINDS = ("spend", "concurrency")


class SectionReader(FieldReader):
    """Reads default, derive_tags, delegation and budgets."""

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

    def delegation(self, node: YNode) -> int | None:
        """delegation.max_depth, None when the section does not set it."""
        fields = self.mapping(node, "delegation", DELEGATION_KEYS)
        if "max_depth" in fields:
            return self.integer(fields["max_depth"], "delegation.max_depth", 0)
        return None

    def budgets(self, node: YNode) -> tuple[Budget, ...]:
        """The budgets list, in file order; ids must be unique."""
        budgets: list[Budget] = []
        seen_budgets: dict[str, int] = {}
        for item in self.seq(node, "budgets"):
            budget = self.budget(item)
            if budget.id in seen_budgets:
                self.fail(
                    f"duplicate budget id '{budget.id}' "
                    f"(first defined on line {seen_budgets[budget.id]})",
                    budget.line,
                )
            seen_budgets[budget.id] = budget.line
            budgets.append(budget)
        return tuple(budgets)

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
                        f"span such as 30s, 15m, 6h, 2d, not {describe(w)}",
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
