"""Small result types: what the SDK hands back instead of protobuf messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from proctor.v1 import decisions_pb2

ALLOW = "allow"
DENY = "deny"
REQUIRE_APPROVAL = "require_approval"
FAIL_CLOSED_RULE_ID = "client.fail_closed"

_DECISION_NAMES = {
    decisions_pb2.DECISION_ALLOW: ALLOW,
    decisions_pb2.DECISION_DENY: DENY,
    decisions_pb2.DECISION_REQUIRE_APPROVAL: REQUIRE_APPROVAL,
}


@dataclass(frozen=True, slots=True)
class EvaluationRequest:
    """One action to decide (the fields of EvaluateRequest)."""

    topic: str
    delegation_path: tuple[str, ...] | list[str] = ()
    risk_tags: tuple[str, ...] | list[str] = ()
    tenant: str = ""
    run_id: str = ""
    request_id: str = ""
    labels: dict[str, str] | None = None
    approval_id: str = ""
    explain: bool = False

    def to_proto(self) -> decisions_pb2.EvaluateRequest:
        return decisions_pb2.EvaluateRequest(
            topic=self.topic,
            delegation_path=list(self.delegation_path),
            risk_tags=list(self.risk_tags),
            tenant=self.tenant,
            run_id=self.run_id,
            request_id=self.request_id,
            labels=self.labels or {},
            approval_id=self.approval_id,
            explain=self.explain,
        )


@dataclass(frozen=True, slots=True)
class DecisionResult:
    """Proctor's answer for one action."""

    decision: str
    rule_id: str
    reason: str
    policy_version: str = ""
    decision_id: str = ""
    approval_id: str = ""
    matched_rule_ids: tuple[str, ...] = ()
    derived_tags: tuple[str, ...] = ()
    # True when the client made this deny itself because Proctor could not answer.
    fail_closed: bool = False
    ok: bool = field(default=True, init=False)
    # With explain: how many rules matched (matched_rule_ids lists as many as the server's
    # --max-explain-bytes allows).
    matched_rule_count: int = 0

    @property
    def allowed(self) -> bool:
        return self.decision == ALLOW

    @classmethod
    def from_proto(cls, msg: decisions_pb2.EvaluateResponse) -> DecisionResult:
        return cls(
            decision=_DECISION_NAMES.get(msg.decision, DENY),
            rule_id=msg.rule_id,
            reason=msg.reason,
            policy_version=msg.policy_version,
            decision_id=msg.decision_id,
            approval_id=msg.approval_id,
            matched_rule_ids=tuple(msg.matched_rule_ids),
            derived_tags=tuple(msg.derived_tags),
            matched_rule_count=msg.matched_rule_count,
        )

    @classmethod
    def fail_closed_deny(cls, why: str) -> DecisionResult:
        return cls(
            decision=DENY,
            rule_id=FAIL_CLOSED_RULE_ID,
            reason=f"Proctor did not answer, failing closed: {why}",
            fail_closed=True,
        )


@dataclass(frozen=True, slots=True)
class ItemError:
    """A batch item the server refused; `code` as grpc.StatusCode's number (3: INVALID_ARGUMENT)."""

    code: int
    message: str
    ok: bool = field(default=False, init=False)


BatchItem = DecisionResult | ItemError


def batch_from_proto(msg: decisions_pb2.EvaluateBatchResponse) -> list[BatchItem]:
    out: list[BatchItem] = []
    for item in msg.results:
        if item.WhichOneof("result") == "error":
            out.append(ItemError(item.error.code, item.error.message))
        else:
            out.append(DecisionResult.from_proto(item.response))
    return out
