"""Evaluate on the wire: request bytes -> engine.Request, answer fields -> response bytes.

Evaluate is served on raw bytes (see server/routes.py) so that its hot path can
skip upb's Python objects: `server/_wire.c` decodes the common, clean request
straight into an engine.Request and encodes the answer, in a few hundred
instructions instead of ~30,000 of interpreted Python. The functions here are
the reference twins (upb and engine.Request, the same code EvaluateBatch uses);
the C decoder hands anything it does not fully understand to them, so they also
word every error. Tests hold the two to the same answers, byte for byte.

With PROCTOR_PURE_PYTHON=1 in the environment, or when the extension was not
built (no compiler at install time), the twins serve alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.message import DecodeError

from proctor import engine
from proctor.v1 import decisions_pb2

from .twins import twin

_wire = twin("proctor.server._wire")
ACCELERATED = _wire is not None
MAX_APPROVAL_ID_CHARS = 128

DECISION_TO_PROTO = {
    "allow": decisions_pb2.DECISION_ALLOW,
    "deny": decisions_pb2.DECISION_DENY,
    "require_approval": decisions_pb2.DECISION_REQUIRE_APPROVAL,
}

__all__ = [
    "ACCELERATED", "DECISION_TO_PROTO", "DecodeError", "decode_evaluate", "decode_evaluate_py",
    "encode_response", "encode_response_py", "to_engine_request",
]


def to_engine_request(msg: decisions_pb2.EvaluateRequest) -> engine.Request:
    """Validate and normalize one EvaluateRequest; raises engine.RequestError."""
    if len(msg.approval_id) > MAX_APPROVAL_ID_CHARS:
        raise engine.RequestError(
            "approval_id", f"at most {MAX_APPROVAL_ID_CHARS} characters"
        )
    # A slice of a repeated field is a plain list, cheaper than tuple() of the
    # container; empty containers are skipped (most calls carry no labels or tags); a
    # map is copied key by key (dict() of it goes through the Mapping ABC's methods).
    tags = msg.risk_tags
    labels = msg.labels
    return engine.Request(
        msg.topic,
        tags[:] if tags else (),
        tuple(msg.delegation_path),
        msg.tenant,
        msg.run_id,
        msg.request_id,
        {k: labels[k] for k in labels} if labels else None,
    )


def decode_evaluate_py(data: bytes) -> tuple[engine.Request, str, bool]:
    """(request, approval_id, explain) of EvaluateRequest bytes, through upb.

    Raises DecodeError on bytes that are not an EvaluateRequest and
    engine.RequestError on a value past its limit.
    """
    msg = decisions_pb2.EvaluateRequest.FromString(data)
    return to_engine_request(msg), msg.approval_id, msg.explain


def encode_response_py(
    decision: int, rule_id: str, reason: str, policy_version: str, decision_id: str,
    approval_id: str, matched_rule_ids: Sequence[str], derived_tags: Sequence[str],
) -> bytes:
    """EvaluateResponse bytes, through upb."""
    msg = decisions_pb2.EvaluateResponse(
        decision=decision, rule_id=rule_id, reason=reason, policy_version=policy_version,
        decision_id=decision_id, approval_id=approval_id,
    )
    if matched_rule_ids:
        msg.matched_rule_ids.extend(matched_rule_ids)
    if derived_tags:
        msg.derived_tags.extend(derived_tags)
    return msg.SerializeToString()


decode_evaluate: Any
encode_response: Any
if _wire is not None:
    # The C decoder builds engine.Request itself and hands what it declines to the twin.
    _wire.bind(engine.Request, decode_evaluate_py)
    decode_evaluate = _wire.decode_evaluate
    encode_response = _wire.encode_response
else:
    decode_evaluate = decode_evaluate_py
    encode_response = encode_response_py
