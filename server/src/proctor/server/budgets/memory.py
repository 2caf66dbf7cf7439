"""The embedded budget store: in-process, same semantics as the Redis store (the rules: store.py).

Used when no --redis-url is given (one process only). State lives in dicts
guarded by one asyncio.Lock; time comes from an injectable clock (epoch
seconds, time.time by default) and is handled in integer milliseconds, exactly
as the Lua scripts handle Redis TIME. Expired reservations are reclaimed by
whichever call meets them first (a heap of expiries), as in Redis.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .plans import (
    check_commit,
    check_release,
    exists_message,
    plan_get,
    plan_reserve,
    request_key,
    tenant_prefixes,
)
from .store import (
    RECORD_MARGIN_SECONDS,
    BudgetDef,
    BudgetStatus,
    CommitResult,
    Counter,
    FailedPrecondition,
    ReleaseResult,
    ReservationExists,
    ReservationNotFound,
    ReserveResult,
    status_of,
)
from .windows import counter_key, window_bounds

_HELD = 2**63  # a held reservation's record never expires (its expiry reclaims it)
_PURGE_EVERY = 1024  # calls between sweeps of dead counters and records (memory only)


@dataclass(slots=True)
class _Slot:
    """One counter the reservation holds: its definition, its key and its window end."""

    counter: Counter
    key: str
    window_end_ms: int  # 0: no window


@dataclass(slots=True)
class _Reservation:
    state: str  # held | committed | released | expired | refused
    request: str  # plans.request_key: the tenant, agent, run and unit it answered
    amount: int
    lease: bool
    expires_ms: int
    record_until_ms: int
    granted: bool
    refused_by: str
    slots: list[_Slot]
    answer: tuple[BudgetStatus, ...]
    actual: int = -1
    commit_answer: tuple[BudgetStatus, ...] = ()


@dataclass(slots=True)
class _Count:
    used: int = 0
    reserved: int = 0
    expire_ms: int = 0  # 0: never


@dataclass(slots=True)
class _State:
    counters: dict[str, _Count] = field(default_factory=dict)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    expiries: list[tuple[int, str]] = field(default_factory=list)  # heap; stale entries skipped


class MemoryBudgetStore:
    """BudgetStore kept in this process."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 record_margin_seconds: int = RECORD_MARGIN_SECONDS) -> None:
        self._clock = clock
        self._margin_ms = record_margin_seconds * 1000
        self._lock = asyncio.Lock()
        self._s = _State()
        self._calls = 0

    # -- helpers -------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _live(self, key: str, now: int) -> _Count | None:
        c = self._s.counters.get(key)
        if c is not None and c.expire_ms and now >= c.expire_ms:
            del self._s.counters[key]
            return None
        return c

    def _status(self, slot: _Slot, now: int) -> BudgetStatus:
        c = self._live(slot.key, now)
        return _make_status(slot, c.used if c else 0, c.reserved if c else 0)

    def _adjust(self, slot: _Slot, now: int, used: int, reserved: int) -> None:
        """Change a counter, only while its window is current (a past window is left alone)."""
        if slot.window_end_ms and now >= slot.window_end_ms:
            return
        c = self._live(slot.key, now)
        if c is None:
            c = self._s.counters[slot.key] = _Count()
        c.used += used
        c.reserved += reserved
        if slot.window_end_ms:
            c.expire_ms = slot.window_end_ms + 1000

    def _reclaim(self, now: int) -> None:
        heap = self._s.expiries
        while heap and heap[0][0] <= now:
            exp, rid = heapq.heappop(heap)
            r = self._s.reservations.get(rid)
            if r is None or r.state != "held" or r.expires_ms != exp:
                continue
            for slot in r.slots:
                self._adjust(slot, now, 0, -r.amount)
            r.state = "expired"
            r.record_until_ms = now + self._margin_ms
        self._calls += 1
        if self._calls % _PURGE_EVERY == 0:
            self._purge(now)

    def _purge(self, now: int) -> None:
        for key in [k for k, c in self._s.counters.items() if c.expire_ms and now >= c.expire_ms]:
            del self._s.counters[key]
        dead = [k for k, r in self._s.reservations.items() if now >= r.record_until_ms]
        for rid in dead:
            del self._s.reservations[rid]

    def _get_reservation(self, rid: str, now: int) -> _Reservation | None:
        r = self._s.reservations.get(rid)
        if r is not None and now >= r.record_until_ms:
            del self._s.reservations[rid]
            return None
        return r

    def _slots(self, counters: tuple[Counter, ...], now: int) -> list[_Slot]:
        out = []
        for c in counters:
            start, end = window_bounds(c.window, c.window_seconds, now)
            key = counter_key("", c.scope, c.window_spec, start, c.budget_id, c.key)
            out.append(_Slot(c, key, end))
        return out

    # -- the store -----------------------------------------------------------------------

    async def reserve(
        self,
        budgets: tuple[BudgetDef, ...],
        reservation_id: str,
        tenant: str,
        agent_id: str,
        run_id: str,
        unit: str,
        amount: int,
        ttl_seconds: int,
    ) -> ReserveResult:
        counters = plan_reserve(
            budgets, reservation_id, tenant, agent_id, run_id, unit, amount, ttl_seconds
        )
        ttl_ms = ttl_seconds * 1000
        async with self._lock:
            now = self._now_ms()
            self._reclaim(now)
            request = request_key(tenant, agent_id, run_id, unit)
            r = self._get_reservation(reservation_id, now)
            if r is not None:
                if r.request != request or r.amount != amount:
                    raise ReservationExists(exists_message(reservation_id))
                if r.state not in ("held", "refused"):
                    raise ReservationExists(exists_message(reservation_id, r.state))
                if r.lease and r.state == "held":
                    r.expires_ms = now + ttl_ms
                    heapq.heappush(self._s.expiries, (r.expires_ms, reservation_id))
                return _reserve_answer(reservation_id, r)
            slots = self._slots(counters, now)
            statuses = [self._status(s, now) for s in slots]
            refused_by = ""
            for st in statuses:
                base = st.reserved if st.kind == "concurrency" else st.used + st.reserved
                if base + amount > st.limit:
                    refused_by = st.budget_id
                    break
            lease = any(c.kind == "concurrency" for c in counters)
            if not refused_by:
                for s in slots:
                    self._adjust(s, now, 0, amount)
                statuses = [self._status(s, now) for s in slots]
            r = _Reservation(
                state="refused" if refused_by else "held",
                request=request,
                amount=amount,
                lease=lease,
                expires_ms=now + ttl_ms,
                record_until_ms=now + ttl_ms + self._margin_ms if refused_by else _HELD,
                granted=not refused_by,
                refused_by=refused_by,
                slots=slots,
                answer=tuple(statuses),
            )
            self._s.reservations[reservation_id] = r
            if not refused_by:
                heapq.heappush(self._s.expiries, (r.expires_ms, reservation_id))
            return _reserve_answer(reservation_id, r)

    async def commit(self, reservation_id: str, actual: int,
                     tenants: tuple[str, ...] | None = None) -> CommitResult:
        check_commit(reservation_id, actual)
        async with self._lock:
            now = self._now_ms()
            self._reclaim(now)
            r = self._get_reservation(reservation_id, now)
            if r is None or not _owned(r.request, tenants):
                raise ReservationNotFound(f"no reservation {reservation_id!r}")
            if r.state == "refused":
                raise FailedPrecondition(f"reservation {reservation_id!r} was refused")
            if r.lease:
                raise FailedPrecondition(
                    f"reservation {reservation_id!r} is a concurrency lease: release it"
                )
            if r.state == "released":
                raise FailedPrecondition(f"reservation {reservation_id!r} was released")
            if r.state == "committed":
                if r.actual != actual:
                    raise FailedPrecondition(
                        f"reservation {reservation_id!r} was already committed with actual "
                        f"{r.actual}"
                    )
                return CommitResult(reservation_id, r.commit_answer)
            refund = r.amount if r.state == "held" else 0
            for s in r.slots:
                self._adjust(s, now, actual, -refund)
            r.state = "committed"
            r.record_until_ms = now + self._margin_ms
            r.actual = actual
            r.commit_answer = tuple(self._status(s, now) for s in r.slots)
            return CommitResult(reservation_id, r.commit_answer)

    async def release(self, reservation_id: str,
                      tenants: tuple[str, ...] | None = None) -> ReleaseResult:
        check_release(reservation_id)
        async with self._lock:
            now = self._now_ms()
            self._reclaim(now)
            r = self._get_reservation(reservation_id, now)
            if r is None or not _owned(r.request, tenants):
                raise ReservationNotFound(f"no reservation {reservation_id!r}")
            if r.state == "held":
                for s in r.slots:
                    self._adjust(s, now, 0, -r.amount)
                r.state = "released"
                r.record_until_ms = now + self._margin_ms
            return ReleaseResult(reservation_id, tuple(self._status(s, now) for s in r.slots))

    async def get(
        self,
        budgets: tuple[BudgetDef, ...],
        tenant: str,
        agent_id: str,
        run_id: str,
        budget_id: str = "",
    ) -> tuple[BudgetStatus, ...]:
        counters = plan_get(budgets, tenant, agent_id, run_id, budget_id)
        async with self._lock:
            now = self._now_ms()
            self._reclaim(now)
            return tuple(self._status(s, now) for s in self._slots(counters, now))

    async def start(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _make_status(slot: _Slot, used: int, reserved: int) -> BudgetStatus:
    return status_of(slot.counter, used, reserved, slot.window_end_ms)


def _reserve_answer(rid: str, r: _Reservation) -> ReserveResult:
    return ReserveResult(
        granted=r.granted,
        refused_by=r.refused_by,
        budgets=r.answer,
        reservation_id=rid,
        expires_at=r.expires_ms / 1000,
    )


def _owned(request: str, tenants: tuple[str, ...] | None) -> bool:
    """The reservation (its request_key) belongs to one of `tenants` (None: any)."""
    return tenants is None or request.startswith(tenant_prefixes(tenants))
