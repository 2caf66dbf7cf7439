"""Audit events of kind "approval": one per step, so one record answers who asked, through
which delegation path, under which policy version and rule, who resolved it, and why.

Fields: `op` and `outcome` (created | approved | denied | expired | consumed),
`status` (the approval's status after the step), `approval_id`, `decision_id`
(the decision that asked for the approval; `used_by` names the decision that
consumed it), the request (request_id, run_id, tenant, delegation_path, topic,
risk_tags, derived_tags, labels), rule_id, rule_reason, approvers,
policy_version, action_hash, expires_at; approved and denied steps add
`reviewer` and `reason` (the resolution reason). Only those two steps carry
reviewer and reason, so an envelope folding the steps in order ends with the
resolution's.
"""

from __future__ import annotations

from typing import Any

from .. import auth
from ..audit.event import format_time
from .store import Approval


def iso(seconds: float) -> str:
    """The audit's time format (RFC 3339 UTC, microseconds: sorts as text)."""
    return format_time(seconds) if seconds else ""


def approval_event(op: str, a: Approval, **extra: Any) -> dict[str, Any]:
    d = a.draft
    fields: dict[str, Any] = {
        "op": op,
        "outcome": op,
        "status": a.status,
        "approval_id": a.approval_id,
        "decision_id": d.decision_id,
        "request_id": d.request_id,
        "run_id": d.run_id,
        "tenant": d.tenant,
        "delegation_path": d.delegation_path,
        "topic": d.topic,
        "risk_tags": d.risk_tags,
        "derived_tags": d.derived_tags,
        "labels": d.labels,
        "rule_id": d.rule_id,
        "rule_reason": d.reason,
        "approvers": d.approvers,
        "policy_version": d.policy_version,
        "action_hash": d.action_hash,
        "expires_at": iso(a.expires_at),
    }
    # who asked for this step: the reviewer, the requesting agent; nobody for an expiry
    fields["caller"] = auth.SYSTEM_CALLER if op == "expired" else auth.audit_caller()
    if op in ("approved", "denied"):
        fields["reviewer"] = a.reviewer
        fields["reason"] = a.resolution_reason
    if op == "consumed":
        fields["used_by"] = a.consumed_by
    fields.update(extra)
    return fields
