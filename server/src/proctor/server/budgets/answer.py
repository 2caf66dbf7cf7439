"""ReserveBudget's answer on the wire: a ReserveResult -> ReserveBudgetResponse bytes.

ReserveBudget is served on raw bytes (server/routes.py, like Evaluate); its answer is
built through upb in place (statuses added to the repeated field, timestamps given as
dicts) and serialized once.
"""

from __future__ import annotations

from typing import Any

from proctor.v1 import budgets_pb2

from .store import BudgetStatus, ReserveResult

KINDS = {
    "spend": budgets_pb2.BUDGET_KIND_SPEND,
    "concurrency": budgets_pb2.BUDGET_KIND_CONCURRENCY,
}


def timestamp(seconds: float) -> dict[str, int]:
    """A Timestamp as the dict a message constructor takes (ms precision): cheaper than
    building a Timestamp and copying it in."""
    secs, ms = divmod(round(seconds * 1000), 1000)
    return {"seconds": secs, "nanos": ms * 1_000_000}


def add_statuses(field: Any, statuses: tuple[BudgetStatus, ...]) -> None:
    """Append the statuses to a repeated BudgetStatus field, built in place (no copies)."""
    add = field.add
    for s in statuses:
        add(
            budget_id=s.budget_id,
            unit=s.unit,
            scope=s.scope,
            scope_key=s.scope_key,
            kind=KINDS.get(s.kind, budgets_pb2.BUDGET_KIND_UNSPECIFIED),
            limit=s.limit,
            used=s.used,
            reserved=s.reserved,
            remaining=s.remaining,
            window=s.window,
            over=s.over,
            window_resets_at=None if s.window_resets_at is None else timestamp(s.window_resets_at),
        )


def reserve_answer(r: ReserveResult) -> bytes:
    """The ReserveBudgetResponse of a store's answer, as bytes."""
    resp = budgets_pb2.ReserveBudgetResponse(
        granted=r.granted, refused_by=r.refused_by, reservation_id=r.reservation_id,
        expires_at=timestamp(r.expires_at),
    )
    add_statuses(resp.budgets, r.budgets)
    data: bytes = resp.SerializeToString()
    return data
