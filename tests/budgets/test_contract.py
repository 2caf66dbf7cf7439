"""The budget store contract, run against the embedded store, a standalone Redis and a
3-master Redis Cluster (the `env` fixture)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from proctor.server.budgets.memory import MemoryBudgetStore
from proctor.server.budgets.store import (
    MAX_AMOUNT,
    BudgetStatus,
    BudgetStore,
    FailedPrecondition,
    InvalidArgument,
    ReservationExists,
    ReservationNotFound,
)
from proctor.server.redis import RedisPyDriver, parse_redis_url

from .conftest import Env, budget

TOKENS = (budget("fleet-tokens", "tokens", 10),)


def by_id(statuses: tuple[BudgetStatus, ...]) -> dict[str, BudgetStatus]:
    return {s.budget_id: s for s in statuses}


async def reserve(store: BudgetStore, budgets: Any, rid: str, amount: int, *, unit: str = "tokens",
                  tenant: str = "acme", agent: str = "a1", run: str = "r1", ttl: int = 60) -> Any:
    return await store.reserve(budgets, rid, tenant, agent, run, unit, amount, ttl)


async def snapshot(store: BudgetStore, env: Env) -> Any:
    """Everything the store holds (Redis: every key of the fleet with its value, the
    durability watch's marker aside)."""
    if isinstance(store, MemoryBudgetStore):
        return repr(store._s)
    r = RedisPyDriver(parse_redis_url(env.url)).client  # a look from outside the store
    out = {}
    try:
        async for key in r.scan_iter(match=store.prefix + "*"):  # type: ignore[attr-defined]
            t = await r.type(key)
            if key.endswith(":marker"):
                continue
            if t == "hash":
                out[key] = sorted((await r.hgetall(key)).items())
            elif t == "zset":
                out[key] = await r.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = await r.get(key)
    finally:
        await r.aclose()
    return sorted(out.items())


def test_grant_and_refuse_at_the_limit(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        a = await reserve(store, TOKENS, "a", 6)
        assert a.granted and a.refused_by == ""
        b = await reserve(store, TOKENS, "b", 4)  # exactly at the limit
        assert b.granted
        s = b.budgets[0]
        assert (s.limit, s.used, s.reserved, s.remaining, s.over) == (10, 0, 10, 0, False)
        c = await reserve(store, TOKENS, "c", 1)
        assert not c.granted and c.refused_by == "fleet-tokens"
        assert c.budgets[0].reserved == 10
        got = await store.get(TOKENS, "", "", "")
        assert got[0].reserved == 10 and got[0].remaining == 0

    env.run(scenario)


def test_all_or_nothing_across_fleet_tenant_agent_run(env: Env) -> None:
    budgets = (
        budget("fleet", "tokens", 100),
        budget("tenant", "tokens", 50, scope="tenant"),
        budget("agent", "tokens", 20, scope="agent"),
        budget("run", "tokens", 10, scope="run"),
    )

    async def scenario(store: BudgetStore) -> None:
        a = await reserve(store, budgets, "a", 8, run="r1")
        assert a.granted
        assert [(s.budget_id, s.scope, s.scope_key, s.reserved) for s in a.budgets] == [
            ("fleet", "fleet", "", 8), ("tenant", "tenant", "acme", 8),
            ("agent", "agent", "a1", 8), ("run", "run", "r1", 8),
        ]
        b = await reserve(store, budgets, "b", 5, run="r1")  # run budget refuses
        assert not b.granted and b.refused_by == "run"
        assert all(s.reserved == 8 for s in b.budgets)
        c = await reserve(store, budgets, "c", 8, run="r2")
        assert c.granted
        d = await reserve(store, budgets, "d", 8, run="r3")  # agent refuses: 24 > 20
        assert not d.granted and d.refused_by == "agent"
        e = await reserve(store, budgets, "e", 8, agent="a2", run="r3")  # another agent: room
        assert e.granted
        st = by_id(await store.get(budgets, "acme", "a1", "r3"))
        assert st["fleet"].reserved == 24 and st["tenant"].reserved == 24
        assert st["agent"].reserved == 16 and st["run"].reserved == 8
        other = by_id(await store.get(budgets, "globex", "a1", "r1"))
        assert other["tenant"].reserved == 0 and other["tenant"].scope_key == "globex"

    env.run(scenario)


def test_refused_by_names_the_first_refusing_budget_in_policy_order(env: Env) -> None:
    small_a = budget("a-small", "calls", 1)
    small_b = budget("b-small", "calls", 1, scope="tenant")

    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, (small_a, small_b), "x", 1, unit="calls")).granted
        r = await reserve(store, (small_a, small_b), "y", 1, unit="calls")
        assert r.refused_by == "a-small"
        r = await reserve(store, (small_b, small_a), "z", 1, unit="calls")
        assert r.refused_by == "b-small"

    env.run(scenario)


def test_answers_report_remaining_and_window_resets(env: Env) -> None:
    budgets = (
        budget("daily", "usd", 100, window="day"),
        budget("monthly", "usd", 1000, window="month", scope="tenant"),
        budget("burst", "usd", 50, window="30s"),
        budget("hourly", "usd", 500, window="hour"),
        budget("minutely", "usd", 70, window="minute"),
        budget("forever", "usd", 10_000),
    )

    async def scenario(store: BudgetStore) -> None:
        before = env.now()
        r = await reserve(store, budgets, "a", 7, unit="usd", ttl=30)
        after = env.now()
        assert r.granted
        st = by_id(r.budgets)
        assert st["daily"].remaining == 93 and st["monthly"].remaining == 993
        today = dt.datetime.fromtimestamp(before, dt.UTC).date()
        midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), dt.UTC)
        assert st["daily"].window_resets_at == midnight.timestamp()
        first = today.replace(day=1)
        nxt = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
        month_end = dt.datetime.combine(nxt, dt.time(), dt.UTC).timestamp()
        assert st["monthly"].window_resets_at == month_end
        assert st["burst"].window_resets_at is not None
        assert st["burst"].window_resets_at % 30 == 0
        assert before < st["burst"].window_resets_at <= after + 30
        assert st["hourly"].window_resets_at % 3600 == 0
        assert st["minutely"].window_resets_at % 60 == 0
        assert st["forever"].window_resets_at is None and st["forever"].window == "none"
        assert st["burst"].window == "30s" and st["monthly"].window == "month"
        assert before + 30 - 0.01 <= r.expires_at <= after + 30 + 0.01

    env.run(scenario)


def test_commit_settles_and_refunds_the_difference(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, TOKENS, "a", 8)).granted
        c = await store.commit("a", 3)
        s = c.budgets[0]
        assert (s.used, s.reserved, s.remaining, c.over) == (3, 0, 7, False)
        assert (await reserve(store, TOKENS, "b", 7)).granted
        assert not (await reserve(store, TOKENS, "c", 1)).granted

    env.run(scenario)


def test_commit_and_release_only_within_the_callers_tenants(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, TOKENS, "a", 4, tenant="acme")).granted
        assert (await reserve(store, TOKENS, "b", 4, tenant="acme2")).granted
        for other in (("globex",), ("acme2",), ("acm",)):
            with pytest.raises(ReservationNotFound):
                await store.commit("a", 1, other)
            with pytest.raises(ReservationNotFound):
                await store.release("a", other)
        c = await store.commit("a", 1, ("globex", "acme"))
        assert c.budgets[0].used == 1
        r = await store.release("b", ("acme2",))
        assert r.budgets[0].reserved == 0

    env.run(scenario)


def test_commit_above_the_reservation_is_recorded_and_over(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, TOKENS, "a", 5)).granted
        c = await store.commit("a", 12)
        s = c.budgets[0]
        assert (s.used, s.reserved, s.remaining, s.over, c.over) == (12, 0, -2, True, True)
        r = await reserve(store, TOKENS, "b", 1)
        assert not r.granted and r.refused_by == "fleet-tokens"
        assert r.budgets[0].over

    env.run(scenario)


def test_release_refunds(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, TOKENS, "a", 10)).granted
        rel = await store.release("a")
        assert rel.budgets[0].reserved == 0 and rel.budgets[0].remaining == 10
        assert (await reserve(store, TOKENS, "b", 10)).granted

    env.run(scenario)


def test_same_reservation_id_never_reserves_twice(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        first = await reserve(store, TOKENS, "a", 4)
        again = await reserve(store, TOKENS, "a", 4)
        assert again == first
        assert (await store.get(TOKENS, "", "", ""))[0].reserved == 4
        # refused answers are remembered too, for the same request
        refused = await reserve(store, TOKENS, "big", 7)
        assert not refused.granted
        assert (await reserve(store, TOKENS, "b", 6)).granted
        await store.release("b")
        assert await reserve(store, TOKENS, "big", 7) == refused
        st = (await store.get(TOKENS, "", "", ""))[0]
        assert (st.used, st.reserved) == (0, 4)

    env.run(scenario)


# (field changed, value) pairs: each is another request under a taken id
OTHER_REQUESTS = [
    {"amount": 5}, {"amount": 3}, {"tenant": "globex"}, {"tenant": "ACME"}, {"agent": "a2"},
    {"run": "r2"}, {"unit": "calls"},
]


@pytest.mark.parametrize("change", OTHER_REQUESTS, ids=lambda c: next(iter(c)))
def test_an_id_reused_with_another_request_is_already_exists(env: Env, change: dict[str, Any]
                                                              ) -> None:
    budgets = (budget("fleet-tokens", "tokens", 100),
               budget("tenant-tokens", "tokens", 50, scope="tenant"),
               budget("fleet-calls", "calls", 100))
    first = {"tenant": "acme", "agent": "a1", "run": "r1", "unit": "tokens", "amount": 4}

    async def call(args: dict[str, Any]) -> Any:
        return await store_.reserve(budgets, "taken", args["tenant"], args["agent"],
                                    args["run"], args["unit"], args["amount"], 60)

    async def scenario(store: BudgetStore) -> None:
        nonlocal store_
        store_ = store
        original = await call(first)
        assert original.granted
        for _ in range(3):  # never granted, never reserved, whatever the retries
            with pytest.raises(ReservationExists) as e:
                await call({**first, **change})
            assert "'taken'" in e.value.message
            assert "acme" not in e.value.message  # nothing of the first request's tenant
        for tenant in ("acme", "globex", "ACME"):
            for st in await store.get(budgets, tenant, "", ""):
                held = st.unit == "tokens" and (st.scope == "fleet" or tenant == "acme")
                assert st.reserved == (4 if held else 0)
                assert st.used == 0
        assert await call(first) == original  # the first request still gets its answer

    store_: Any = None
    env.run(scenario)


def test_an_ended_reservation_id_is_never_granted_again(env: Env) -> None:
    budgets = (budget("tokens", "tokens", 100),
               budget("slots", "agents", 5, kind="concurrency"))

    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, budgets, "c", 4)).granted
        await store.commit("c", 3)
        assert (await reserve(store, budgets, "r", 4)).granted
        await store.release("r")
        assert (await reserve(store, budgets, "x", 4, ttl=1)).granted
        assert (await reserve(store, budgets, "l", 1, unit="agents")).granted
        await store.release("l")
        await env.sleep(1.1)  # "x" expires
        for rid, amount, unit, state in (("c", 4, "tokens", "committed"),
                                         ("r", 4, "tokens", "released"),
                                         ("x", 4, "tokens", "expired"),
                                         ("l", 1, "agents", "released")):
            for _ in range(2):
                with pytest.raises(ReservationExists, match=f"'{rid}' was {state}"):
                    await reserve(store, budgets, rid, amount, unit=unit)
        st = by_id(await store.get(budgets, "", "", ""))
        assert (st["tokens"].used, st["tokens"].reserved) == (3, 0)
        assert st["slots"].reserved == 0

    env.run(scenario)


def test_agent_and_run_counters_are_each_tenants_own(env: Env) -> None:
    budgets = (budget("per-agent", "tokens", 10, scope="agent"),
               budget("per-run", "tokens", 10, scope="run"))

    async def scenario(store: BudgetStore) -> None:
        a = await reserve(store, budgets, "a", 9, tenant="acme", agent="bot", run="r")
        assert a.granted
        g = await reserve(store, budgets, "g", 9, tenant="globex", agent="bot", run="r")
        assert g.granted  # the same agent and run ids under another tenant: its own counters
        assert [(s.scope_key, s.reserved) for s in g.budgets] == [("bot", 9), ("r", 9)]
        seen = await store.get(budgets, "globex", "bot", "r")
        assert [s.reserved for s in seen] == [9, 9]
        assert [s.reserved for s in await store.get(budgets, "initech", "bot", "r")] == [0, 0]
        assert not (await reserve(store, budgets, "a2", 2, tenant="acme", agent="bot",
                                  run="r2")).granted

    env.run(scenario)


def test_commit_with_an_absurd_actual_is_refused_and_changes_nothing(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, TOKENS, "a", 5)).granted
        for actual in (MAX_AMOUNT + 1, 2**53 - 1, 2**62, -1):
            with pytest.raises(InvalidArgument, match="actual"):
                await store.commit("a", actual)
        st = (await store.get(TOKENS, "", "", ""))[0]
        assert (st.used, st.reserved) == (0, 5)
        c = await store.commit("a", MAX_AMOUNT)  # the bound itself is accepted
        assert c.budgets[0].used == MAX_AMOUNT and c.over

    env.run(scenario)


def test_commit_and_release_retries(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        await reserve(store, TOKENS, "a", 5)
        c1 = await store.commit("a", 2)
        c2 = await store.commit("a", 2)
        assert c1 == c2 and c2.budgets[0].used == 2
        with pytest.raises(FailedPrecondition, match="already committed"):
            await store.commit("a", 3)
        rel = await store.release("a")  # no-op after commit
        assert rel.budgets[0].used == 2 and rel.budgets[0].reserved == 0
        await reserve(store, TOKENS, "b", 5)
        await store.release("b")
        await store.release("b")
        with pytest.raises(FailedPrecondition, match="released"):
            await store.commit("b", 1)
        await reserve(store, TOKENS, "big", 50)
        with pytest.raises(FailedPrecondition, match="refused"):
            await store.commit("big", 1)
        st = (await store.get(TOKENS, "", "", ""))[0]
        assert (st.used, st.reserved) == (2, 0)

    env.run(scenario)


def test_expired_reservations_return_to_the_pool(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        a = await reserve(store, TOKENS, "a", 10, ttl=1)
        assert a.granted
        assert not (await reserve(store, TOKENS, "b", 1)).granted
        await env.sleep_until(a.expires_at)
        st = (await store.get(TOKENS, "", "", ""))[0]
        assert st.reserved == 0
        assert (await reserve(store, TOKENS, "c", 10)).granted
        # the expired one, committed late: the spend happened, the counter says so
        c = await store.commit("a", 3)
        assert c.budgets[0].used == 3 and c.budgets[0].reserved == 10 and c.over

    env.run(scenario)


def test_fixed_window_rolls_over(env: Env) -> None:
    budgets = (budget("burst", "calls", 3, window="2s"),)

    async def scenario(store: BudgetStore) -> None:
        # start just after a boundary so the window does not end mid-test
        start = await reserve(store, budgets, "probe", 1, unit="calls")
        await env.sleep_until(start.budgets[0].window_resets_at)
        a = await reserve(store, budgets, "a", 3, unit="calls")
        assert a.granted
        await store.commit("a", 3)
        r = await reserve(store, budgets, "b", 1, unit="calls")
        assert not r.granted and r.budgets[0].used == 3
        resets = r.budgets[0].window_resets_at
        await env.sleep_until(resets)
        n = await reserve(store, budgets, "c", 3, unit="calls")
        assert n.granted
        assert n.budgets[0].used == 0 and n.budgets[0].window_resets_at == resets + 2
        # a late commit settles in the window it was reserved in: the new one is untouched
        await store.release("c")
        rel = await store.release("c")
        assert rel.budgets[0].used == 0

    env.run(scenario)


def test_a_commit_after_the_window_ended_does_not_leak_into_the_next(env: Env) -> None:
    budgets = (budget("burst", "calls", 5, window="1s"),)

    async def scenario(store: BudgetStore) -> None:
        probe = await reserve(store, budgets, "probe", 1, unit="calls")
        await store.release("probe")
        await env.sleep_until(probe.budgets[0].window_resets_at)
        a = await reserve(store, budgets, "a", 5, unit="calls", ttl=30)
        await env.sleep_until(a.budgets[0].window_resets_at)
        await store.commit("a", 5)
        now = (await store.get(budgets, "", "", ""))[0]
        assert (now.used, now.reserved) == (0, 0)

    env.run(scenario)


def test_concurrency_leases(env: Env) -> None:
    budgets = (budget("slots", "agents", 2, kind="concurrency", scope="tenant"),)

    async def scenario(store: BudgetStore) -> None:
        l1 = await reserve(store, budgets, "l1", 1, unit="agents", ttl=30)
        l2 = await reserve(store, budgets, "l2", 1, unit="agents", ttl=1)
        assert l1.granted and l2.granted
        assert l1.budgets[0].kind == "concurrency" and l1.budgets[0].window_resets_at is None
        l3 = await reserve(store, budgets, "l3", 1, unit="agents", ttl=30)
        assert not l3.granted and l3.refused_by == "slots"
        other = await reserve(store, budgets, "o1", 1, unit="agents", tenant="globex")
        assert other.granted
        with pytest.raises(FailedPrecondition, match="lease"):
            await store.commit("l1", 1)
        renewed = await reserve(store, budgets, "l1", 1, unit="agents", ttl=60)
        assert renewed.granted and renewed.expires_at > l1.expires_at
        assert (await store.get(budgets, "acme", "", ""))[0].reserved == 2  # no second slot
        await store.release("l1")
        assert (await store.get(budgets, "acme", "", ""))[0].reserved == 1
        await env.sleep_until(l2.expires_at)  # l2 expires: its slot is free
        st = (await store.get(budgets, "acme", "", ""))[0]
        assert (st.used, st.reserved) == (0, 0)
        assert (await reserve(store, budgets, "l4", 2, unit="agents")).granted
        # an expired lease is not re-taken by its id
        with pytest.raises(ReservationExists, match="expired"):
            await reserve(store, budgets, "l2", 1, unit="agents", ttl=30)
        assert (await store.get(budgets, "acme", "", ""))[0].reserved == 2

    env.run(scenario)


def test_renewing_a_lease_keeps_it_alive(env: Env) -> None:
    budgets = (budget("slots", "agents", 1, kind="concurrency"),)

    async def scenario(store: BudgetStore) -> None:
        await reserve(store, budgets, "l", 1, unit="agents", ttl=1)
        await env.sleep(0.6)
        await reserve(store, budgets, "l", 1, unit="agents", ttl=1)
        await env.sleep(0.6)
        assert (await store.get(budgets, "", "", ""))[0].reserved == 1
        assert not (await reserve(store, budgets, "m", 1, unit="agents")).granted
        await env.sleep(0.6)
        assert (await store.get(budgets, "", "", ""))[0].reserved == 0

    env.run(scenario)


def test_records_live_while_held_and_for_the_margin_after(env: Env) -> None:
    env.margin = 1

    async def scenario(store: BudgetStore) -> None:
        a = await reserve(store, TOKENS, "a", 10, ttl=1)
        await env.sleep(2.2)  # past ttl + margin with no call at all: the hold is still found
        assert (await store.get(TOKENS, "", "", ""))[0].reserved == 0
        with pytest.raises(ReservationExists, match="expired"):  # remembered for the margin
            await reserve(store, TOKENS, "a", 10, ttl=1)
        await env.sleep(1.1)
        fresh = await reserve(store, TOKENS, "a", 10, ttl=1)  # forgotten: a new reservation
        assert fresh.granted and fresh.expires_at > a.expires_at + 2
        with pytest.raises(ReservationNotFound):
            await store.commit("gone", 1)

    env.run(scenario)


def test_unknown_reservation_is_not_found(env: Env) -> None:
    async def scenario(store: BudgetStore) -> None:
        with pytest.raises(ReservationNotFound):
            await store.commit("nope", 1)
        with pytest.raises(ReservationNotFound):
            await store.release("nope")

    env.run(scenario)


def test_get_budget(env: Env) -> None:
    budgets = (
        budget("fleet", "tokens", 100),
        budget("per-run", "tokens", 10, scope="run"),
        budget("slots", "agents", 3, kind="concurrency", scope="agent"),
    )

    async def scenario(store: BudgetStore) -> None:
        await reserve(store, budgets, "a", 4, run="r9")
        every = await store.get(budgets, "", "", "")
        assert [s.budget_id for s in every] == ["fleet"]  # only budgets whose key is given
        every = await store.get(budgets, "acme", "a1", "r9")
        assert [(s.budget_id, s.reserved) for s in every] == [
            ("fleet", 4), ("per-run", 4), ("slots", 0)]
        one = await store.get(budgets, "acme", "", "r9", "per-run")
        assert [(s.budget_id, s.scope_key, s.remaining) for s in one] == [("per-run", "r9", 6)]
        with pytest.raises(InvalidArgument) as e:
            await store.get(budgets, "", "", "", "nope")
        assert e.value.field == "budget_id"
        with pytest.raises(InvalidArgument) as e:
            await store.get(budgets, "", "", "", "per-run")
        assert e.value.field == "run_id"

    env.run(scenario)


def test_budgets_follow_the_policy_on_each_call(env: Env) -> None:
    v1 = (budget("fleet-tokens", "tokens", 5),)
    v2 = (budget("fleet-tokens", "tokens", 12),)

    async def scenario(store: BudgetStore) -> None:
        assert (await reserve(store, v1, "a", 5)).granted
        assert not (await reserve(store, v1, "b", 5)).granted
        assert (await reserve(store, v2, "c", 5)).granted  # the limit was raised by a reload
        c = await store.commit("a", 5)  # settles on the counter it was reserved on
        assert c.budgets[0].used == 5

    env.run(scenario)


BAD_RESERVE = [
    ({"amount": 0}, "amount"),
    ({"amount": -3}, "amount"),
    ({"amount": 2**53}, "amount"),
    ({"amount": MAX_AMOUNT + 1}, "amount"),
    ({"unit": "tokenz"}, "unit"),
    ({"unit": ""}, "unit"),
    ({"ttl": 0}, "ttl_seconds"),
    ({"ttl": 86401}, "ttl_seconds"),
    ({"rid": ""}, "reservation_id"),
    ({"rid": "x" * 129}, "reservation_id"),
    ({"tenant": "t" * 129}, "tenant"),
    ({"agent": "a" * 129}, "agent_id"),
    ({"run": ""}, "run_id"),  # the policy has a run-scoped budget of this unit
    ({"tenant": ""}, "tenant"),
]


def test_bad_input_is_refused_and_changes_nothing(env: Env) -> None:
    budgets = (
        budget("fleet", "tokens", 100),
        budget("tenant", "tokens", 50, scope="tenant"),
        budget("run", "tokens", 10, scope="run"),
    )
    args = {"rid": "ok", "amount": 1, "unit": "tokens", "ttl": 60, "tenant": "acme",
            "agent": "a1", "run": "r1"}

    async def scenario(store: BudgetStore) -> None:
        await reserve(store, budgets, "held", 3, ttl=1)
        await reserve(store, budgets, "done", 2)
        await store.commit("done", 2)
        await env.sleep(1.1)  # "held" has expired but is not reclaimed yet
        before = await snapshot(store, env)
        for change, field in BAD_RESERVE:
            a = {**args, **change}
            with pytest.raises(InvalidArgument) as e:
                await store.reserve(budgets, a["rid"], a["tenant"], a["agent"], a["run"],
                                    a["unit"], a["amount"], a["ttl"])
            assert e.value.field == field and field in str(e.value), change
        for call, f in (
            (store.commit("done", -1), "actual"),
            (store.commit("", 1), "reservation_id"),
            (store.commit("done", 2**53), "actual"),
            (store.commit("done", MAX_AMOUNT + 1), "actual"),
            (store.release(""), "reservation_id"),
            (store.release("r" * 129), "reservation_id"),
            (store.get(budgets, "", "", "", "x" * 129), "budget_id"),
        ):
            with pytest.raises(InvalidArgument) as e:
                await call
            assert e.value.field == f
        assert await snapshot(store, env) == before
        assert before  # the store did hold something

    env.run(scenario)


def test_ids_with_quotes_backslashes_and_astral_characters(env: Env) -> None:
    # The Redis store writes a reservation's record as JSON text itself (reserve.lua):
    # these ids must come back from commit, release, retries and GetBudget as they went in.
    budgets = (
        budget('q"uote\\d', "tokens", 10, window="day"),
        budget("t-é-\U0001f600", "tokens", 3, scope="tenant", window="30s"),
        budget("lease/ü", "slots", 1, scope="run", kind="concurrency"),
    )
    tenant, run = 'acme "\\ \u00e9\U0001f680', "run\t7"

    async def scenario(store: BudgetStore) -> None:
        async def res(rid: str, amount: int, unit: str = "tokens") -> Any:
            return await reserve(store, budgets, rid, amount, unit=unit, tenant=tenant, run=run)

        a = await res('r"1\\é', 2)
        assert a.granted
        assert [(s.budget_id, s.scope_key, s.reserved) for s in a.budgets] == [
            ('q"uote\\d', "", 2), ("t-é-\U0001f600", tenant, 2)]
        refused = await res("r2-\U0001f600", 2)
        assert not refused.granted and refused.refused_by == "t-é-\U0001f600"
        again = await res("r2-\U0001f600", 2)  # a retry: the first answer, nothing reserved
        assert (again.granted, again.refused_by) == (False, "t-é-\U0001f600")
        assert again.budgets == refused.budgets
        assert (await res('r"1\\é', 2)).budgets == a.budgets
        done = await store.commit('r"1\\é', 1)
        assert [(s.budget_id, s.used, s.reserved) for s in done.budgets] == [
            ('q"uote\\d', 1, 0), ("t-é-\U0001f600", 1, 0)]
        lease = await res("l-\U0001f680", 1, unit="slots")
        assert lease.granted and lease.budgets[0].scope_key == run
        assert not (await res("l-2", 1, unit="slots")).granted
        freed = await store.release("l-\U0001f680")
        assert [(s.budget_id, s.reserved) for s in freed.budgets] == [("lease/ü", 0)]
        got = by_id(await store.get(budgets, tenant, "a1", run))
        assert {k: (v.used, v.reserved) for k, v in got.items()} == {
            'q"uote\\d': (1, 0), "t-é-\U0001f600": (1, 0), "lease/ü": (0, 0)}

    env.run(scenario)
