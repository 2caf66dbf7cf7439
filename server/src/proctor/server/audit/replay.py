"""`proctor replay --policy CANDIDATE --audit DIR`: re-decide recorded decisions.

Each recorded `decision` event is rebuilt as an engine.Request (the recorded
risk tags are the request's own, before derive_tags) and evaluated under the
candidate. Decisions are ordered allow < require_approval < deny: a stricter
candidate answer is `escalated`, a looser one `relaxed`, the same one
`unchanged` (a different deciding rule with the same answer counts as
unchanged and is reported as `rule_changed`). A recorded `allow` that was
granted through an approval stays allowed when the candidate asks for approval,
since that approval still covers the very same action.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ORDER = {"allow": 0, "require_approval": 1, "deny": 2}


@dataclass
class ReplayResult:
    policy: str
    policy_version: str
    total: int = 0
    escalated: int = 0
    relaxed: int = 0
    unchanged: int = 0
    rule_changed: int = 0
    invalid: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "policy_version": self.policy_version, "total": self.total,
            "escalated": self.escalated, "relaxed": self.relaxed, "unchanged": self.unchanged,
            "rule_changed": self.rule_changed, "invalid": self.invalid, "changes": self.changes,
            "errors": self.errors,
        }

    def render(self) -> str:
        lines = [
            f"replayed {self.total} decisions under {self.policy} "
            f"(policy_version {self.policy_version}): {self.escalated} escalated, "
            f"{self.relaxed} relaxed, {self.unchanged} unchanged "
            f"({self.rule_changed} with another rule), {self.invalid} not replayable"
        ]
        for c in self.changes:
            lines.append(
                f"{c['change'].upper():9} {c['decision_id'] or c['event_id']} "
                f"tenant={c['tenant'] or '-'} topic={c['topic']} "
                f"path={'>'.join(c['delegation_path'])}: "
                f"{c['recorded']} ({c['recorded_rule']}, {c['recorded_policy_version']}) -> "
                f"{c['candidate']} ({c['candidate_rule']})"
            )
        lines += [f"NOT REPLAYABLE {e}" for e in self.errors[:20]]
        return "\n".join(lines)


def replay(policy_path: str, events: Iterable[dict[str, Any]]) -> ReplayResult:
    from proctor import engine
    policy = engine.load_policy(policy_path)
    res = ReplayResult(policy_path, policy.policy_version)
    for ev in events:
        if ev.get("kind") != "decision":
            continue
        recorded = str(ev.get("outcome", ""))
        if recorded not in ORDER:
            continue
        res.total += 1
        try:
            req = engine.Request(
                topic=str(ev.get("topic", "")),
                risk_tags=tuple(ev.get("risk_tags") or ()),
                delegation_path=tuple(ev.get("delegation_path") or ()),
                tenant=str(ev.get("tenant", "")),
                run_id=str(ev.get("run_id", "")),
                request_id=str(ev.get("request_id", "")),
                labels=dict(ev.get("labels") or {}),
            )
        except (ValueError, TypeError) as exc:
            res.invalid += 1
            res.errors.append(f"{ev.get('event_id')}: {exc}")
            continue
        d = policy.evaluate(req)
        candidate = d.decision
        effective = candidate
        if ev.get("approval_id") and recorded == "allow" and candidate == "require_approval":
            effective = "allow"
        delta = ORDER[effective] - ORDER[recorded]
        if delta == 0:
            res.unchanged += 1
            if d.rule_id != ev.get("rule_id"):
                res.rule_changed += 1
            continue
        change = "escalated" if delta > 0 else "relaxed"
        if delta > 0:
            res.escalated += 1
        else:
            res.relaxed += 1
        res.changes.append({
            "change": change,
            "event_id": ev.get("event_id", ""),
            "decision_id": ev.get("decision_id", ""),
            "time": ev.get("time", ""),
            "tenant": ev.get("tenant", ""),
            "topic": ev.get("topic", ""),
            "delegation_path": list(ev.get("delegation_path") or ()),
            "recorded": recorded,
            "recorded_rule": ev.get("rule_id", ""),
            "recorded_policy_version": ev.get("policy_version", ""),
            "candidate": candidate,
            "candidate_rule": d.rule_id,
            "candidate_reason": d.reason,
        })
    return res


def dump(res: ReplayResult) -> str:
    return json.dumps(res.as_json(), ensure_ascii=False)
