"""Hypothesis stateful tests: random reserve/commit/release/time sequences against a plain
reference model, on the embedded store and on Redis. The model derives `reserved` from
the live reservations on every read (the stores keep it as an incrementally updated
counter), so the two disagree on any leak, double count or missed expiry.

Reservation ids come from a small pool and each reserve draws its tenant, agent, unit
and amount afresh, so ids are reused with other requests all the time: the stores must
answer ALREADY_EXISTS then (never granted, nothing reserved), answer the same request
with its first answer, never grant an id again once its reservation ended, and never
show statuses other than the request's own tenant's (the model computes every answer
from the request's tenant's counters)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from proctor.server.budgets.store import (
    MAX_AMOUNT,
    BudgetError,
    FailedPrecondition,
    InvalidArgument,
    ReservationExists,
    ReservationNotFound,
)

from .conftest import Env, FakeClock, budget

TENANTS = ("acme", "globex")
AGENTS = ("x", "y")
IDS = tuple(f"r{i}" for i in range(8))

TIMED = (
    budget("fleet-tokens", "tokens", 20),
    budget("tenant-tokens", "tokens", 12, window="10s", scope="tenant"),
    budget("slots", "agents", 2, kind="concurrency", scope="agent"),
)
UNTIMED = (
    budget("fleet-tokens", "tokens", 20),
    budget("tenant-tokens", "tokens", 12, scope="tenant"),
    budget("slots", "agents", 2, kind="concurrency", scope="agent"),
)


Status = tuple[str, str, int, int]  # budget id, scope key, used, reserved


@dataclass
class MRes:
    request: tuple[str, str, str]  # tenant, agent, unit
    amount: int
    lease: bool
    expires: int
    state: str  # held | committed | released | refused (expiry is derived from `expires`)
    counters: list[tuple[str, str, int, int]]  # budget id, scope key, window start, window end
    granted: bool
    refused_by: str
    answer: list[Status]
    actual: int = -1


@dataclass
class Model:
    budgets: tuple[Any, ...]
    res: dict[str, MRes] = field(default_factory=dict)
    used: dict[tuple[str, str, int], int] = field(default_factory=dict)

    @staticmethod
    def window(b: Any, now: int) -> tuple[int, int]:
        if b.window == "none" or b.kind == "concurrency":
            return 0, 0
        span = b.window_seconds * 1000
        return now - now % span, now - now % span + span

    def key(self, b: Any, tenant: str, agent: str) -> str:
        """The counter: an agent's is its tenant's own."""
        return {"fleet": "", "tenant": tenant, "agent": f"{tenant}/{agent}"}[b.scope]

    @staticmethod
    def shown(b: Any, tenant: str, agent: str) -> str:
        """The scope key an answer shows."""
        return {"fleet": "", "tenant": tenant, "agent": agent}[b.scope]

    def live(self, r: MRes, now: int) -> bool:
        return r.state == "held" and now < r.expires

    def counts(self, bid: str, key: str, start: int, end: int, now: int) -> tuple[int, int]:
        if end and now >= end:
            return 0, 0
        reserved = sum(
            r.amount for r in self.res.values()
            if self.live(r, now) and (bid, key, start, end) in r.counters
        )
        return self.used.get((bid, key, start), 0), reserved

    def reserve(self, now: int, rid: str, tenant: str, agent: str, unit: str, amount: int,
                ttl: int) -> tuple[str, Any]:
        """("invalid" | "exists", None) or ("ok", (granted, refused_by, expires, answer))."""
        if not 1 <= amount <= MAX_AMOUNT:
            return "invalid", None
        r = self.res.get(rid)
        if r is not None:
            if r.request != (tenant, agent, unit) or r.amount != amount:
                return "exists", None
            if r.state == "held" and not self.live(r, now):
                r.state = "expired"
            if r.state not in ("held", "refused"):
                return "exists", None
            if r.lease and r.state == "held":
                r.expires = now + ttl * 1000
            return "ok", (r.granted, r.refused_by, r.expires, r.answer)
        counters, refused_by, lease, before = [], "", False, []
        for b in self.budgets:
            if b.unit != unit:
                continue
            start, end = self.window(b, now)
            c = (b.id, self.key(b, tenant, agent), start, end)
            counters.append(c)
            lease = lease or b.kind == "concurrency"
            used, reserved = self.counts(*c, now)
            before.append((b.id, self.shown(b, tenant, agent), used, reserved))
            base = reserved if b.kind == "concurrency" else used + reserved
            if not refused_by and base + amount > b.limit:
                refused_by = b.id
        extra = 0 if refused_by else amount
        answer = [(bid, key, used, reserved + extra) for bid, key, used, reserved in before]
        self.res[rid] = MRes((tenant, agent, unit), amount, lease, now + ttl * 1000,
                             "refused" if refused_by else "held", counters, not refused_by,
                             refused_by, answer)
        return "ok", (not refused_by, refused_by, now + ttl * 1000, answer)

    def commit(self, now: int, rid: str, actual: int) -> str:
        if not 0 <= actual <= MAX_AMOUNT:
            return "invalid"
        r = self.res.get(rid)
        if r is None:
            return "not_found"
        if r.state in ("refused", "released") or r.lease:
            return "precondition"
        if r.state == "committed":
            return "ok" if r.actual == actual else "precondition"
        for bid, key, start, end in r.counters:
            if not end or now < end:
                self.used[(bid, key, start)] = self.used.get((bid, key, start), 0) + actual
        r.state, r.actual = "committed", actual
        return "ok"

    def release(self, now: int, rid: str) -> str:
        r = self.res.get(rid)
        if r is None:
            return "not_found"
        if self.live(r, now):
            r.state = "released"
        return "ok"

    def status(self, tenant: str, agent: str, now: int) -> list[tuple[str, str, int, int]]:
        out = []
        for b in self.budgets:
            start, end = self.window(b, now)
            key = self.key(b, tenant, agent)
            used, reserved = self.counts(b.id, key, start, end, now)
            out.append((b.id, self.shown(b, tenant, agent), used, reserved))
        return out


class BudgetMachine(RuleBasedStateMachine):
    env: Env
    budgets: tuple[Any, ...]
    timed: bool

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        if self.timed:
            self.env = Env("memory", clock=FakeClock())
            self.env.clock.t = 1_800_000_000.0  # type: ignore[union-attr]
        self.store = self.loop.run_until_complete(self._make())
        self.model = Model(self.budgets)
        self.sent: dict[str, tuple[str, str, str, int]] = {}

    async def _make(self) -> Any:
        return self.env.make_store()

    def now(self) -> int:
        return int(self.env.now() * 1000)

    def call(self, coro: Any) -> Any:
        try:
            return "ok", self.loop.run_until_complete(coro)
        except ReservationNotFound:
            return "not_found", None
        except FailedPrecondition:
            return "precondition", None
        except ReservationExists:
            return "exists", None
        except InvalidArgument:
            return "invalid", None
        except BudgetError as e:  # pragma: no cover - a failure to report
            raise AssertionError(f"unexpected {e!r}") from e

    @rule(rid=st.sampled_from(IDS), tenant=st.sampled_from(TENANTS), agent=st.sampled_from(AGENTS),
          unit=st.sampled_from(("tokens", "tokens", "agents")),
          amount=st.one_of(st.integers(1, 8), st.sampled_from((0, MAX_AMOUNT + 1))),
          ttl=st.integers(1, 5))
    def reserve(self, rid: str, tenant: str, agent: str, unit: str, amount: int, ttl: int) -> None:
        if not self.timed:
            ttl = 3600
        self.sent.setdefault(rid, (tenant, agent, unit, amount))
        outcome, got = self.call(self.store.reserve(self.budgets, rid, tenant, agent, "", unit,
                                                    amount, ttl))
        want, answer = self.model.reserve(self.now(), rid, tenant, agent, unit, amount, ttl)
        assert outcome == want
        if want != "ok":
            return
        granted, refused_by, expires, statuses = answer
        assert (got.granted, got.refused_by) == (granted, refused_by)
        assert [(s.budget_id, s.scope_key, s.used, s.reserved) for s in got.budgets] == statuses
        if self.timed:
            assert round(got.expires_at * 1000) == expires

    @rule(rid=st.sampled_from(IDS), ttl=st.integers(1, 5))
    def retry(self, rid: str, ttl: int) -> None:
        """The first request under an id, sent again (a client retrying a lost answer)."""
        if rid in self.sent:
            self.reserve(rid, *self.sent[rid], ttl)  # type: ignore[misc]

    @rule(rid=st.sampled_from(IDS),
          actual=st.one_of(st.integers(0, 10), st.sampled_from((-1, MAX_AMOUNT + 1, 2**53 - 1))))
    def commit(self, rid: str, actual: int) -> None:
        outcome, _ = self.call(self.store.commit(rid, actual))
        assert outcome == self.model.commit(self.now(), rid, actual)

    @rule(rid=st.sampled_from(IDS))
    def release(self, rid: str) -> None:
        outcome, _ = self.call(self.store.release(rid))
        assert outcome == self.model.release(self.now(), rid)

    @rule(ms=st.integers(1, 4000))
    def advance(self, ms: int) -> None:
        if self.timed:
            self.env.clock.t += ms / 1000  # type: ignore[union-attr]

    @invariant()
    def counters_agree(self) -> None:
        now = self.now()
        for tenant in TENANTS:
            for agent in AGENTS:
                got = self.loop.run_until_complete(self.store.get(self.budgets, tenant, agent, ""))
                mine = [(s.budget_id, s.scope_key, s.used, s.reserved) for s in got]
                assert mine == self.model.status(tenant, agent, now)

    def teardown(self) -> None:
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


class MemoryMachine(BudgetMachine):
    budgets = TIMED
    timed = True


TestMemoryAgainstModel = MemoryMachine.TestCase
TestMemoryAgainstModel.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def redis_machine(store_redis: Any) -> type[BudgetMachine]:
    class RedisMachine(BudgetMachine):
        budgets = UNTIMED
        timed = False
        env = Env("redis", url=store_redis.url)

    return RedisMachine


def test_redis_store_against_model(redis_machine: type[BudgetMachine]) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        redis_machine,
        settings=settings(max_examples=12, stateful_step_count=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
