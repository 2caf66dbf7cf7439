"""The Python SDK's budget methods and `reservation` context manager, against a real
`proctor serve` with the embedded store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proctor.client import (
    AsyncProctorClient,
    BudgetRefusedError,
    InvalidRequestError,
    ProctorClient,
    ProctorError,
)
from tests.support.proctor import start_proctor

from .test_service import POLICY

SERVER_POLICY = POLICY.replace("rules: []", """rules:
  - id: allow-all
    match: {topics: ["**"]}
    decision: allow
    reason: "test"
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = Path(tmp_path_factory.mktemp("client"))
    (d / "policy.yaml").write_text(SERVER_POLICY)
    s = start_proctor(d / "policy.yaml", d / "server")
    try:
        yield s
    finally:
        s.stop()


def _in_a_fresh_window(window: int = 30, margin: float = 10.0) -> None:
    """tenant-tokens is a 30 s window aligned to the epoch: a test that reads `used` after
    committing must not straddle a reset. Close to the end of a window, start in the next."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.05)  # the window's reset is the behaviour waited for


def test_sync_client_budgets(server: Any) -> None:
    _in_a_fresh_window()
    with ProctorClient(server.address) as p:
        r = p.reserve("tokens", 4, tenant="t-sync", reservation_id="s1")
        assert r.granted and r.reservation_id == "s1" and not r.lease
        assert [b.budget_id for b in r.budgets] == ["fleet-tokens", "tenant-tokens"]
        assert r.budgets[1].window_resets_at is not None and r.expires_at is not None
        c = p.commit("s1", 6)
        assert c.budgets[1].used == 6 and not c.over
        with p.reservation("tokens", 3, tenant="t-sync") as held:
            held.actual = 1
        st = {b.budget_id: b for b in p.budget(tenant="t-sync")}
        assert (st["tenant-tokens"].used, st["tenant-tokens"].reserved) == (7, 0)
        with pytest.raises(RuntimeError), p.reservation("tokens", 3, tenant="t-sync"):
            raise RuntimeError("the action failed")
        assert p.budget("tenant-tokens", tenant="t-sync")[0].reserved == 0  # released
        with pytest.raises(BudgetRefusedError) as e, p.reservation("tokens", 4, tenant="t-sync"):
            pass
        assert e.value.reservation.refused_by == "tenant-tokens"
        with p.reservation("agents", 1, agent_id="a1") as lease:
            assert lease.reservation.lease
            assert p.budget("slots", agent_id="a1")[0].reserved == 1
        assert p.budget("slots", agent_id="a1")[0].reserved == 0  # a lease is released
        with pytest.raises(InvalidRequestError, match="amount"):
            p.reserve("tokens", 0, tenant="t-sync")
        with pytest.raises(ProctorError) as nf:
            p.release("nope")
        assert nf.value.code.name == "NOT_FOUND"


def test_async_client_budgets(server: Any) -> None:
    _in_a_fresh_window()

    async def main() -> None:
        async with AsyncProctorClient(server.address) as p:
            async with p.reservation("tokens", 5, tenant="t-async") as held:
                held.actual = 2
            r = await p.reserve("tokens", 2, tenant="t-async", reservation_id="a1")
            assert r.granted
            assert (await p.reserve("tokens", 2, tenant="t-async", reservation_id="a1")) == r
            await p.release("a1")
            st = await p.budget("tenant-tokens", tenant="t-async")
            assert (st[0].used, st[0].reserved, st[0].remaining) == (2, 0, 8)

    asyncio.run(main())
