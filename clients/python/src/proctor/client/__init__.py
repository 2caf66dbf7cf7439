"""Python SDK for Proctor: ask before every action.

    from proctor.client import ProctorClient

    with ProctorClient("127.0.0.1:50051", fail_closed=True) as proctor:
        d = proctor.evaluate("job.42.export.bulk", delegation_path=["planner", "etl-7"],
                             risk_tags=["bulk-data"])
        if d.decision == "allow":
            ...

`AsyncProctorClient` is the same for asyncio.
"""

from .aio import AsyncProctorClient
from .approvals import ApprovalState
from .budgets import (
    BudgetRefusedError,
    BudgetStatus,
    Held,
    Reservation,
    Settlement,
)
from .client import ProctorClient
from .errors import InvalidRequestError, ProctorError, ProctorUnavailableError
from .results import (
    ALLOW,
    DENY,
    FAIL_CLOSED_RULE_ID,
    REQUIRE_APPROVAL,
    BatchItem,
    DecisionResult,
    EvaluationRequest,
    ItemError,
)
from .retry import NO_RETRY, RetryPolicy

__all__ = [
    "ALLOW",
    "ApprovalState",
    "DENY",
    "FAIL_CLOSED_RULE_ID",
    "NO_RETRY",
    "REQUIRE_APPROVAL",
    "AsyncProctorClient",
    "BatchItem",
    "BudgetRefusedError",
    "BudgetStatus",
    "DecisionResult",
    "EvaluationRequest",
    "Held",
    "InvalidRequestError",
    "ItemError",
    "ProctorClient",
    "ProctorError",
    "ProctorUnavailableError",
    "Reservation",
    "RetryPolicy",
    "Settlement",
]
