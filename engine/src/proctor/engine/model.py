"""The validated policy: plain frozen dataclasses, built only by the loader.

Tags held here are already normalized (trimmed, lower-cased, no empties).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALLOW = "allow"
DENY = "deny"
REQUIRE_APPROVAL = "require_approval"
DECISIONS = (ALLOW, DENY, REQUIRE_APPROVAL)

DENY_OVERRIDES = "deny_overrides"
FIRST_MATCH = "first_match"
COMBININGS = (DENY_OVERRIDES, FIRST_MATCH)

DEFAULT_RULE_ID = "default"
MAX_DEPTH_RULE_ID = "delegation.max_depth"
RESERVED_RULE_IDS = (DEFAULT_RULE_ID, MAX_DEPTH_RULE_ID)
DEFAULT_APPROVAL_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Match:
    """The conditions of a rule; every one stated must hold."""

    topics: tuple[str, ...]
    risk_tags: tuple[str, ...] = ()  # any-of; () = no condition
    risk_tags_all: tuple[str, ...] = ()  # all-of; () = no condition
    agents: tuple[str, ...] = ()  # globs on the acting agent; () = no condition
    chain: tuple[str, ...] = ()  # globs on any agent of the path; () = no condition
    tenants: tuple[str, ...] = ()  # globs on the tenant; () = no condition
    depth_min: int | None = None
    depth_max: int | None = None
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()  # every key with one of its values

    @property
    def has_conditions_beyond_topic_and_tags(self) -> bool:
        return bool(
            self.risk_tags_all
            or self.agents
            or self.chain
            or self.tenants
            or self.depth_min is not None
            or self.depth_max is not None
            or self.labels
        )


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    match: Match
    decision: str
    reason: str
    approvers: tuple[str, ...] = ()
    approval_ttl_seconds: int = DEFAULT_APPROVAL_TTL_SECONDS
    line: int = 0


@dataclass(frozen=True, slots=True)
class DeriveTags:
    """Server-side tags: every request whose topic matches gets ``add``."""

    topics: tuple[str, ...]
    add: tuple[str, ...]
    line: int = 0


@dataclass(frozen=True, slots=True)
class Budget:
    """A budget of DESIGN section 4, as docs/INTERNALS.md pins it."""

    id: str
    unit: str
    limit: int
    window: str  # "none" | "minute" | "hour" | "day" | "month" | "fixed"
    window_seconds: int  # the span of a fixed window; 0 otherwise
    window_spec: str  # as written: "day", "30s", "none"
    scope: str  # "fleet" | "tenant" | "agent" | "run"
    kind: str  # "spend" | "concurrency"
    line: int


@dataclass(frozen=True, slots=True)
class Default:
    decision: str = DENY
    reason: str = "no rule matched"
    approval_ttl_seconds: int = DEFAULT_APPROVAL_TTL_SECONDS


@dataclass(frozen=True, slots=True)
class Policy:
    version: str
    policy_version: str
    combining: str
    default: Default
    derive_tags: tuple[DeriveTags, ...]
    max_depth: int | None
    rules: tuple[Rule, ...]
    budgets: tuple[Budget, ...]
    source: str = "<string>"
    text: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request."""

    decision: str
    rule_id: str
    reason: str
    policy_version: str
    matched_rule_ids: tuple[str, ...] = ()
    derived_tags: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    approval_ttl_seconds: int = DEFAULT_APPROVAL_TTL_SECONDS
