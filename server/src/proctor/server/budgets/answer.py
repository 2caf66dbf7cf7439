"""ReserveBudget's answer on the wire: a ReserveResult -> ReserveBudgetResponse bytes.

ReserveBudget is served on raw bytes (server/routes.py, like Evaluate) so that
its answer can skip upb's Python objects: `server/budgets/_answer.c` writes the
bytes in well under a microsecond, where building the message through upb and
serializing it (the reference twin here, `reserve_response_py`) takes ~10 µs
for two budgets. Tests hold the two to the same bytes. With PROCTOR_PURE_PYTHON=1
in the environment, or when the extension was not built, the reference serves.
"""

from __future__ import annotations

from typing import Any

from proctor.v1 import budgets_pb2

from ..twins import twin
from .store import BudgetStatus, ReserveResult

_answer = twin("proctor.server.budgets._answer")
ACCELERATED = _answer is not None

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


def reserve_response_py(
    granted: bool, refused_by: str, statuses: tuple[BudgetStatus, ...], reservation_id: str,
    expires_at: float,
) -> bytes:
    """The reference twin: the message built through upb, serialized."""
    resp = budgets_pb2.ReserveBudgetResponse(
        granted=granted, refused_by=refused_by, reservation_id=reservation_id,
        expires_at=timestamp(expires_at),
    )
    add_statuses(resp.budgets, statuses)
    return resp.SerializeToString()


reserve_response = reserve_response_py if _answer is None else _answer.reserve_response


def reserve_answer(r: ReserveResult) -> bytes:
    """The ReserveBudgetResponse of a store's answer, as bytes."""
    return reserve_response(r.granted, r.refused_by, r.budgets, r.reservation_id, r.expires_at)
