"""A plain linear reference evaluator written from DESIGN section 2, for the tests.

It works on the policy as a plain dict (what yaml.safe_load gives) and a request
as a dict, scanning every rule in file order; nothing of the engine is used.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

STRENGTH = {"deny": 2, "require_approval": 1, "allow": 0}


def norm_tags(tags: list[str] | tuple[str, ...] | None) -> set[str]:
    return {t.strip().lower() for t in tags or ()} - {""}


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, topic: str) -> bool:
    return _seq_match(tuple(pattern.split(".")), tuple(topic.split(".")))


def _seq_match(p: tuple[str, ...], t: tuple[str, ...]) -> bool:
    if not p:
        return not t
    head = p[0]
    if head == "**":
        return _seq_match(p[1:], t) or (bool(t) and _seq_match(p, t[1:]))
    if not t:
        return False
    return (head == "*" or head == t[0]) and _seq_match(p[1:], t[1:])


def glob(pattern: str, value: str) -> bool:
    rx = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(rx, value, re.DOTALL) is not None


def any_glob(patterns: list[str], value: str) -> bool:
    return any(glob(p, value) for p in patterns)


def rule_matches(rule: dict[str, Any], req: dict[str, Any], tags: set[str]) -> bool:
    m = rule["match"]
    if not any(topic_matches(p, req["topic"]) for p in m["topics"]):
        return False
    any_of = norm_tags(m.get("risk_tags"))
    if any_of and not any_of & tags:
        return False
    all_of = norm_tags(m.get("risk_tags_all"))
    if not all_of <= tags:
        return False
    path = req["delegation_path"]
    if m.get("agents") and not any_glob(m["agents"], path[-1]):
        return False
    if m.get("chain") and not any(any_glob(m["chain"], a) for a in path):
        return False
    if m.get("tenants") and not any_glob(m["tenants"], req.get("tenant", "")):
        return False
    depth = len(path) - 1
    bounds = m.get("depth") or {}
    if "min" in bounds and depth < bounds["min"]:
        return False
    if "max" in bounds and depth > bounds["max"]:
        return False
    labels = req.get("labels") or {}
    for key, values in (m.get("labels") or {}).items():
        if key not in labels or labels[key] not in [str(v) for v in values]:
            return False
    return True


def reference_decide(policy: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    """{"decision", "rule_id", "reason", "matched_rule_ids", "derived_tags"} for req."""
    given = norm_tags(req.get("risk_tags"))
    derived: set[str] = set()
    for entry in policy.get("derive_tags") or ():
        if any(topic_matches(p, req["topic"]) for p in entry["topics"]):
            derived |= norm_tags(entry["add"])
    tags = given | derived
    extra = sorted(derived - given)
    max_depth = (policy.get("delegation") or {}).get("max_depth")
    if max_depth is not None and len(req["delegation_path"]) - 1 > max_depth:
        return {
            "decision": "deny",
            "rule_id": "delegation.max_depth",
            "matched_rule_ids": [],
            "derived_tags": extra,
        }
    matched = [r for r in policy.get("rules") or () if rule_matches(r, req, tags)]
    if not matched:
        default = policy.get("default") or {"decision": "deny", "reason": "no rule matched"}
        return {
            "decision": default["decision"],
            "rule_id": "default",
            "reason": default.get("reason", "no rule matched"),
            "matched_rule_ids": [],
            "derived_tags": extra,
        }
    if policy.get("combining", "deny_overrides") == "first_match":
        winner = matched[0]
    else:
        best = max(STRENGTH[r["decision"]] for r in matched)
        winner = next(r for r in matched if STRENGTH[r["decision"]] == best)
    return {
        "decision": winner["decision"],
        "rule_id": winner["id"],
        "reason": winner.get("reason", ""),
        "matched_rule_ids": [r["id"] for r in matched],
        "derived_tags": extra,
    }
