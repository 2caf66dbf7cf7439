"""Python SDK for Proctor: ask before every action.

    from proctor.client import ProctorClient

    with ProctorClient("127.0.0.1:50051", fail_closed=True) as proctor:
        d = proctor.evaluate("job.42.export.bulk", delegation_path=["planner", "etl-7"],
                             risk_tags=["bulk-data"])
        if d.decision == "allow":
            ...

`AsyncProctorClient` is the same for asyncio. `delegation(agent_id)` pushes an agent onto
the delegation path that evaluate() uses when the caller names none (proctor.client.delegation);
framework integrations live in proctor.client.integrations.
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
from .delegation import (
    ContextThreadPoolExecutor,
    carry_context,
    delegation,
    delegation_path,
)
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
    "ContextThreadPoolExecutor",
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
    "carry_context",
    "delegation",
    "delegation_path",
]
