"""One decision's governance envelope: what `proctor audit show` prints.

The decision event folded with its approval's steps (server/approvals/events.py).
The seed's keys come first, in this order: `run_id`, `delegation_path`, `action`
(the topic), `decision`, `policy_version`, `approval{status, reviewer, reason}`;
everything else follows them (`topic` repeats `action` for readers that know it
by that name).
"""

from __future__ import annotations

import time
from typing import Any

from .event import format_time


def _fold_steps(d: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The approval as its steps leave it: approved and denied steps carry reviewer and
    reason, so folding them in order ends with the resolution's."""
    a: dict[str, Any] = {"status": "none", "reviewer": "", "reason": "", "approvers": [],
                         "expires_at": "", "used_by": "", "resolved_by": {}}
    if d.get("outcome") == "require_approval":
        a["status"] = "pending" if d.get("approval_id") else "not created"
    for s in steps:
        a["status"] = str(s.get("status") or s.get("outcome") or a["status"])
        a["reviewer"] = str(s.get("reviewer", a["reviewer"]))
        a["reason"] = str(s.get("reason", a["reason"]))
        a["approvers"] = list(s.get("approvers") or a["approvers"])
        a["expires_at"] = str(s.get("expires_at") or a["expires_at"])
        a["used_by"] = str(s.get("used_by") or a["used_by"])
        if s.get("op") in ("approved", "denied") and isinstance(s.get("caller"), dict):
            a["resolved_by"] = s["caller"]  # the reviewer as a principal
    if (a["status"] in ("pending", "approved") and a["expires_at"]
            and a["expires_at"] < format_time(time.time())):
        a["status"] = "expired"  # no server recorded the expiry (none was running): it passed
    return a


def envelope(d: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The envelope of decision event `d` with its approval's steps, seed keys first."""
    path = list(d.get("delegation_path") or [])
    a = _fold_steps(d, steps)
    return {
        "run_id": d.get("run_id", ""),
        "delegation_path": path,
        "action": d.get("topic", ""),
        "decision": d.get("outcome", ""),
        "policy_version": d.get("policy_version", ""),
        "approval": {
            "status": a["status"], "reviewer": a["reviewer"], "reason": a["reason"],
            "approval_id": d.get("approval_id", ""), "approvers": a["approvers"],
            "expires_at": a["expires_at"], "used_by": a["used_by"],
            "resolved_by": a["resolved_by"], "steps": steps,
        },
        # who asked (DESIGN section 12): the principal and how it authenticated
        "caller": d.get("caller") or {},
        "acting_agent": path[-1] if path else "",
        "depth": max(0, len(path) - 1),
        "rule_id": d.get("rule_id", ""),
        "reason": d.get("reason", ""),
        "tenant": d.get("tenant", ""),
        "topic": d.get("topic", ""),
        "risk_tags": d.get("risk_tags", []),
        "derived_tags": d.get("derived_tags", []),
        "labels": d.get("labels", {}),
        "decision_id": d.get("decision_id", ""),
        "request_id": d.get("request_id", ""),
        "time": d.get("time", ""),
        "latency_us": d.get("latency_us"),
        "writer": d.get("writer", ""),
        "seq": d.get("seq"),
        "event_id": d.get("event_id", ""),
        "hash": d.get("hash", ""),
        "prev_hash": d.get("prev_hash", ""),
    }


def render_envelope(env: dict[str, Any]) -> str:
    """The envelope as aligned `key value` rows: the seed's keys first, as in the JSON."""
    a = env["approval"]
    rows = [
        ("run_id", env["run_id"] or "-"),
        ("delegation_path", " -> ".join(env["delegation_path"]) + f"  (depth {env['depth']})"),
        ("action", env["action"]),
        ("decision", env["decision"]),
        ("policy_version", env["policy_version"]),
        ("approval", _approval_line(a)),
        ("rule", f"{env['rule_id'] or '-'}: {env['reason']}"),
        ("asked_by", _principal(env.get("caller"))),
        ("resolved_by", _principal(a.get("resolved_by"))),
        ("acting_agent", env["acting_agent"] or "-"),
        ("tenant", env["tenant"] or "-"),
        ("risk_tags", ", ".join(env["risk_tags"]) or "-"),
        ("derived_tags", ", ".join(env["derived_tags"]) or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(env["labels"].items())) or "-"),
        ("approvers", ", ".join(a.get("approvers") or []) or "-"),
        ("expires_at", a.get("expires_at") or "-"),
        ("used_by", a.get("used_by") or "-"),
        ("decision_id", env["decision_id"]),
        ("request_id", env["request_id"] or "-"),
        ("time", env["time"]),
        ("latency_us", env["latency_us"]),
        ("recorded_by", f"{env['writer']} seq {env['seq']} (event {env['event_id']})"),
        ("hash", env["hash"]),
        ("prev_hash", env["prev_hash"] or "(first of its chain)"),
    ]
    return "\n".join(f"{k:16} {v}" for k, v in rows)


def _principal(caller: Any) -> str:
    """`ID (METHOD)` of an audit `caller` field; "-" when there is none."""
    if not isinstance(caller, dict) or not caller.get("id"):
        return "-"
    return f"{caller['id']} ({caller.get('method', '?')})"


def _approval_line(a: dict[str, Any]) -> str:
    """`ID STATUS by REVIEWER: REASON`, or the status alone when no approval was created."""
    if not a["approval_id"]:
        return str(a["status"])
    text = f"{a['approval_id']} {a['status']}"
    if a["reviewer"]:
        text += f" by {a['reviewer']}"
    if a["reason"]:
        text += f": {a['reason']}"
    return text
