"""ReserveBudget's allow_unbudgeted: how an integration asks "is there a budget for this
unit?" and reserves in the same call."""

from __future__ import annotations

import uuid

import grpc
import pytest

from proctor.client import InvalidRequestError, ProctorClient, ProctorError


def test_a_unit_without_budget_is_granted_and_holds_nothing(client: ProctorClient) -> None:
    r = client.reserve("no_such_unit", 5, run_id="r", allow_unbudgeted=True)
    assert r.granted and not r.held and r.budgets == ()
    with pytest.raises(ProctorError) as err:
        client.commit(r.reservation_id, 5)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    # without the flag a unit nobody budgets is still a mistake, named
    with pytest.raises(InvalidRequestError, match="unit"):
        client.reserve("no_such_unit", 5, run_id="r")


def test_a_budgeted_unit_reserves_as_always(client: ProctorClient, run_id: str) -> None:
    r = client.reserve("tool_calls", 2, run_id=run_id, allow_unbudgeted=True)
    assert r.granted and r.held and [b.budget_id for b in r.budgets] == ["run-tool-calls"]
    refused = client.reserve("tool_calls", 1, run_id=run_id, allow_unbudgeted=True)
    assert not refused.granted and refused.refused_by == "run-tool-calls"
    client.release(r.reservation_id)


@pytest.mark.parametrize("bad", [
    {"reservation_id": "x" * 129}, {"amount": 0}, {"ttl_seconds": 0}, {"run_id": "r" * 129},
])
def test_bad_input_is_refused_even_without_a_budget(client: ProctorClient,
                                                    bad: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"reservation_id": uuid.uuid4().hex, "amount": 1,
                                 "ttl_seconds": 60, **bad}
    amount = kwargs.pop("amount")
    with pytest.raises(InvalidRequestError):
        client.reserve("no_such_unit", amount, allow_unbudgeted=True, **kwargs)  # type: ignore[arg-type]
