"""Approvals and audit envelopes as JSON-ready data, for the API and the templates alike."""

from __future__ import annotations

import time
from typing import Any

from ..approvals.events import iso
from ..approvals.store import PENDING, Approval


def approval_data(a: Approval, now: float | None = None) -> dict[str, Any]:
    """Everything a reviewer needs to judge one approval (the governance envelope)."""
    d = a.draft
    now = time.time() if now is None else now
    return {
        "approval_id": a.approval_id,
        "status": a.status,
        "request_id": d.request_id,
        "run_id": d.run_id,
        "tenant": d.tenant,
        "delegation_path": list(d.delegation_path),
        "acting_agent": d.delegation_path[-1] if d.delegation_path else "",
        "topic": d.topic,
        "risk_tags": list(d.risk_tags),
        "derived_tags": list(d.derived_tags),
        "labels": dict(d.labels),
        "rule_id": d.rule_id,
        "reason": d.reason,
        "approvers": list(d.approvers),
        "policy_version": d.policy_version,
        "decision_id": d.decision_id,
        "action_hash": d.action_hash,
        "created_at": iso(a.created_at),
        "expires_at": iso(a.expires_at),
        "resolved_at": iso(a.resolved_at),
        "age_seconds": max(0, round(now - a.created_at)),
        "expires_in_seconds": max(0, round(a.expires_at - now)) if a.open else 0,
        "reviewer": a.reviewer,
        "resolution_reason": a.resolution_reason,
        "consumed_by": a.consumed_by,
        "requested_by": d.requested_by,
        "url": f"/approvals/{a.approval_id}",
    }


def pending_first(items: list[Approval]) -> list[Approval]:
    """Pending approvals, oldest first (the one waiting longest on top)."""
    return sorted((a for a in items if a.status == PENDING), key=lambda a: a.created_at)


def resolved(items: list[Approval]) -> list[Approval]:
    """Everything no longer pending, most recently resolved (or created) first."""
    done = [a for a in items if a.status != PENDING]
    return sorted(done, key=lambda a: a.resolved_at or a.created_at, reverse=True)


def duration(seconds: float) -> str:
    """42s, 5m, 3h 10m, 2d 4h: short and readable."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"
