"""server/budgets/_answer.c against its reference twin (upb) in server/budgets/answer.py.

Whatever the statuses, the C encoder must write exactly the bytes upb writes for
the same ReserveBudgetResponse, and raise where upb raises; and it must be the
one serving, or the speed is silently lost.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.budgets import answer
from proctor.server.budgets.store import BudgetStatus, ReserveResult
from proctor.v1 import budgets_pb2

C = answer._answer
needs_c = pytest.mark.skipif(C is None, reason="proctor.server.budgets._answer not built")
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=140)
TIMES = st.one_of(
    st.none(),
    st.floats(min_value=-1e10, max_value=1e11, allow_nan=False),
    st.integers(min_value=-10**10, max_value=10**11),
    st.sampled_from([0.0, 0.0005, 0.0015, 1796601600.0, 1796529557.7335, -0.0005]),
)


def test_the_extension_is_built() -> None:
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert answer.ACCELERATED and answer.reserve_response is C.reserve_response


@st.composite
def statuses(draw: Any) -> BudgetStatus:
    limit = draw(st.one_of(st.integers(min_value=0, max_value=2**53), INT64))
    used = draw(st.one_of(st.integers(min_value=0, max_value=2**40), INT64))
    reserved = draw(st.one_of(st.integers(min_value=0, max_value=2**40), INT64))
    return BudgetStatus(
        draw(TEXT), draw(TEXT), draw(st.sampled_from(["fleet", "tenant", "agent", "run", ""])),
        draw(TEXT), draw(st.sampled_from(["spend", "concurrency", "", "other"])), limit, used,
        reserved, draw(st.sampled_from(["none", "day", "30s", ""])),
        draw(TIMES.filter(lambda t: t is None or isinstance(t, float))),
    )


def both(*args: Any) -> tuple[Any, Any]:
    """Each twin's bytes, or the fact that it raised."""
    out = []
    for f in (C.reserve_response, answer.reserve_response_py):
        try:
            out.append(f(*args))
        except (TypeError, ValueError, OverflowError, AttributeError, UnicodeError):
            out.append("raised")
    return out[0], out[1]


@needs_c
@settings(max_examples=400, deadline=None)
@given(st.booleans(), TEXT, st.lists(statuses(), max_size=5).map(tuple), TEXT,
       TIMES.filter(lambda t: t is not None))
def test_bytes_match_upb(granted: bool, refused_by: str, sts: tuple[BudgetStatus, ...],
                         rid: str, expires_at: float) -> None:
    fast, ref = both(granted, refused_by, sts, rid, expires_at)
    assert fast == ref
    if fast != "raised":  # and what upb reads back is the answer given
        msg = budgets_pb2.ReserveBudgetResponse.FromString(fast)
        assert (msg.granted, msg.refused_by, msg.reservation_id) == (granted, refused_by, rid)
        assert [(b.used, b.reserved, b.remaining, b.over) for b in msg.budgets] == [
            (s.used, s.reserved, s.remaining, s.over) for s in sts]


@needs_c
def test_boundaries_and_bad_values() -> None:
    ok = BudgetStatus("b", "u", "fleet", "", "spend", 10, 3, 4, "day", 1.0)
    cases: list[tuple[Any, ...]] = [
        (True, "", (ok,), "r", 0.0),  # an empty Timestamp is still written
        (False, "b", (ok, ok), "", 2.5e-4),
        (True, "", (BudgetStatus("b", "u", "fleet", "", "spend", 10, 30, 4, "day", None),), "r",
         1.0),  # over, remaining negative
        (True, "", (BudgetStatus("b", "u", "f", "", "spend", 2**63 - 1, -1, 0, "d", None),), "r",
         1.0),  # remaining beyond int64: both raise
        (True, "", (BudgetStatus("b", "u", "f", "", "spend", 2**63, 0, 0, "d", None),), "r", 1.0),
        (True, "", (BudgetStatus("b", "u", "f", "", "spend", 1.5, 0, 0, "d", None),), "r", 1.0),
        (True, "", (BudgetStatus("b", 7, "f", "", "spend", 1, 0, 0, "d", None),), "r", 1.0),
        (True, "", (BudgetStatus("b", "u", "f", "", None, 1, 0, 0, "d", None),), "r", 1.0),
        (True, "", (BudgetStatus("b", "u", "f", "", ["spend"], 1, 0, 0, "d", None),), "r", 1.0),
        (True, "", (BudgetStatus("b", "u", "f", "", "spend", 1, 0, 0, "d", "soon"),), "r", 1.0),
        (True, "\ud800", (ok,), "r", 1.0),  # a lone surrogate
        (True, "", (ok,), "r", float("inf")),
        (True, "", (ok,), "r", 1e300),
        (True, "", ("not a status",), "r", 1.0),
        (True, "", [ok], "r", 1.0),  # a list where the store gives a tuple: C refuses
    ]
    for args in cases:
        fast, ref = both(*args)
        if isinstance(args[2], list):
            assert fast == "raised" and ref != "raised"
        else:
            assert fast == ref, args
    big = BudgetStatus("x" * 300, "u" * 200, "fleet", "k" * 500, "spend", 2**53, 2**40, 7, "30s",
                       1796601600.123)
    fast, ref = both(True, "", (big,) * 12, "r" * 128, 1796529557.733)  # outgrows the stack
    assert fast == ref != "raised"


def test_reserve_answer_is_the_serving_twin() -> None:
    s = BudgetStatus("fleet-tokens", "tokens", "fleet", "", "spend", 100, 5, 6, "day", 86400.0)
    r = ReserveResult(True, "", (s,), "res-1", 60.5)
    assert answer.reserve_answer(r) == answer.reserve_response_py(True, "", (s,), "res-1", 60.5)
