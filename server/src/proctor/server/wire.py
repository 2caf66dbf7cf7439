"""Evaluate on the wire: request bytes -> engine.Request, answer fields -> response bytes.

Evaluate and EvaluateStream are served on raw bytes (see server/routes.py) so
that a malformed item can be answered in its slot; protobuf's own parser (upb)
reads every request, the same one EvaluateBatch and every other method use, so
the same bytes decide the same everywhere. (A hand-written C decoder once sat
here; it bought too little to keep two parsers: docs/performance.md, "Native code".)
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError

from proctor import engine
from proctor.v1 import decisions_pb2

MAX_APPROVAL_ID_CHARS = 128

DECISION_TO_PROTO = {
    "allow": decisions_pb2.DECISION_ALLOW,
    "deny": decisions_pb2.DECISION_DENY,
    "require_approval": decisions_pb2.DECISION_REQUIRE_APPROVAL,
}

__all__ = [
    "DECISION_TO_PROTO", "DecodeError", "decode_evaluate", "encode_response", "to_engine_request",
]


def to_engine_request(msg: decisions_pb2.EvaluateRequest) -> engine.Request:
    """Validate and normalize one EvaluateRequest; raises engine.RequestError."""
    if len(msg.approval_id) > MAX_APPROVAL_ID_CHARS:
        raise engine.RequestError(
            "approval_id", f"at most {MAX_APPROVAL_ID_CHARS} characters"
        )
    # A slice of a repeated field is a plain list, cheaper than tuple() of the
    # container (tuple() of the slice too); empty containers are skipped (most calls
    # carry no labels or tags); a map is copied key by key (dict() of it goes through
    # the Mapping ABC's methods).
    tags = msg.risk_tags
    labels = msg.labels
    return engine.Request(
        msg.topic,
        tags[:] if tags else (),
        tuple(msg.delegation_path[:]),
        msg.tenant,
        msg.run_id,
        msg.request_id,
        {k: labels[k] for k in labels} if labels else None,
    )


def decode_evaluate(data: bytes) -> tuple[engine.Request, str, bool]:
    """(request, approval_id, explain) of EvaluateRequest bytes.

    Raises DecodeError on bytes that are not an EvaluateRequest and
    engine.RequestError on a value past its limit.
    """
    msg = decisions_pb2.EvaluateRequest.FromString(data)
    return to_engine_request(msg), msg.approval_id, msg.explain


def encode_response(
    decision: decisions_pb2.Decision, rule_id: str, reason: str, policy_version: str,
    decision_id: str, approval_id: str, matched_rule_ids: Sequence[str],
    derived_tags: Sequence[str], matched_rule_count: int = 0,
) -> bytes:
    """EvaluateResponse bytes."""
    msg = decisions_pb2.EvaluateResponse(
        decision=decision, rule_id=rule_id, reason=reason, policy_version=policy_version,
        decision_id=decision_id, approval_id=approval_id, matched_rule_count=matched_rule_count,
    )
    if matched_rule_ids:
        msg.matched_rule_ids.extend(matched_rule_ids)
    if derived_tags:
        msg.derived_tags.extend(derived_tags)
    return msg.SerializeToString()
