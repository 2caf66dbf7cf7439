"""Random policies and requests for the property and corpus tests (plain random + hypothesis)."""

from __future__ import annotations

import random
from typing import Any

SEGMENTS = ["job", "a", "b", "read", "export", "x-1"]
TAGS = ["pii", "external", "bulk", " PII", "External ", "secret"]
AGENTS = ["etl-1", "etl-2", "research-1", "root", "mailer"]
AGENT_GLOBS = ["etl-*", "*-1", "root", "*", "research*", "mail*r", "nobody"]
TENANTS = ["acme", "globex", ""]
TENANT_GLOBS = ["acme", "glo*", "*", "ac*e"]
LABELS = {"env": ["prod", "dev", "stage"], "tier": ["1", "2"]}
DECISIONS = ["allow", "deny", "require_approval"]


def random_pattern(r: random.Random) -> str:
    n = r.randint(1, 4)
    segs = [r.choice(SEGMENTS + ["*", "*", "**", "**"]) for _ in range(n)]
    return ".".join(segs)


def random_rule(r: random.Random, index: int) -> dict[str, Any]:
    match: dict[str, Any] = {"topics": [random_pattern(r) for _ in range(r.randint(1, 3))]}
    if r.random() < 0.6:
        match["risk_tags"] = r.sample(TAGS, r.randint(0, 2))
    if r.random() < 0.2:
        match["risk_tags_all"] = r.sample(TAGS, r.randint(1, 2))
    if r.random() < 0.25:
        match["agents"] = r.sample(AGENT_GLOBS, r.randint(1, 2))
    if r.random() < 0.2:
        match["chain"] = r.sample(AGENT_GLOBS, r.randint(1, 2))
    if r.random() < 0.2:
        match["tenants"] = r.sample(TENANT_GLOBS, r.randint(1, 2))
    if r.random() < 0.2:
        lo = r.choice([None, 0, 1, 2])
        hi = r.choice([None, 2, 3, 4])
        depth = {}
        if lo is not None:
            depth["min"] = lo
        if hi is not None:
            depth["max"] = hi
        match["depth"] = depth
    if r.random() < 0.2:
        key = r.choice(list(LABELS))
        match["labels"] = {key: r.sample(LABELS[key], r.randint(1, 2))}
    decision = r.choice(DECISIONS)
    rule: dict[str, Any] = {"id": f"r{index}", "match": match, "decision": decision}
    if decision != "allow" or r.random() < 0.5:
        rule["reason"] = f"reason {index}"
    if decision == "require_approval" and r.random() < 0.5:
        rule["approvers"] = ["team-a"]
        rule["approval_ttl"] = r.choice(["30m", "1h", "90s", "2d"])
    return rule


def random_policy(r: random.Random, rules: int) -> dict[str, Any]:
    policy: dict[str, Any] = {"version": "v1"}
    if r.random() < 0.5:
        policy["combining"] = r.choice(["deny_overrides", "first_match"])
    if r.random() < 0.3:
        policy["default"] = {"decision": r.choice(DECISIONS), "reason": "fallback"}
    if r.random() < 0.5:
        policy["derive_tags"] = [
            {"topics": [random_pattern(r)], "add": r.sample(TAGS, r.randint(1, 2))}
            for _ in range(r.randint(1, 2))
        ]
    if r.random() < 0.3:
        policy["delegation"] = {"max_depth": r.randint(0, 4)}
    policy["rules"] = [random_rule(r, i) for i in range(rules)]
    return policy


def instantiate(r: random.Random, pattern: str) -> str:
    out: list[str] = []
    for seg in pattern.split("."):
        if seg == "*":
            out.append(r.choice(SEGMENTS))
        elif seg == "**":
            out.extend(r.choice(SEGMENTS) for _ in range(r.randint(0, 2)))
        else:
            out.append(seg)
    return ".".join(out) or r.choice(SEGMENTS)


def random_request(r: random.Random, policy: dict[str, Any]) -> dict[str, Any]:
    rules = policy.get("rules") or []
    if rules and r.random() < 0.7:
        topic = instantiate(r, r.choice(r.choice(rules)["match"]["topics"]))
    else:
        topic = ".".join(r.choice(SEGMENTS) for _ in range(r.randint(1, 5)))
    req: dict[str, Any] = {
        "topic": topic,
        "delegation_path": [r.choice(AGENTS) for _ in range(r.randint(1, 6))],
        "risk_tags": r.sample(TAGS, r.randint(0, 3)),
    }
    if r.random() < 0.7:
        req["tenant"] = r.choice(TENANTS)
    if r.random() < 0.5:
        req["labels"] = {k: r.choice(v) for k, v in LABELS.items() if r.random() < 0.7}
    return req
