"""The embedded approval store: in-process, same semantics as the Redis store (store.py).

Used when no --redis-url is given (one process only). Records live in a dict;
every operation runs without awaiting in between, so each is atomic on the
event loop. Time comes from an injectable clock (epoch seconds). A waiter parks
on a future of its own, filed under its approval id; a transition of that
approval wakes only its waiters. A waiter also wakes at the approval's expiry,
so an expiry nobody else notices still ends the wait.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable

from .store import (
    APPROVED,
    CONSUMED,
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_PENDING_PER_TENANT,
    DENIED,
    EXPIRED,
    MAX_OPEN_APPROVALS,
    MISMATCH,
    NOT_FOUND,
    PENDING,
    RETENTION_SECONDS,
    Approval,
    ApprovalNotFound,
    ConsumeResult,
    CreateResult,
    Draft,
    ExpiredListener,
    FailedPrecondition,
    StoreFull,
    TenantFull,
    check_draft,
    check_id,
    check_list,
    check_resolution,
    new_approval_id,
    precondition_message,
    tenant_full_message,
)

_PURGE_EVERY = 1024  # calls between sweeps of records past retention


def _ms(t: float) -> float:
    return int(t * 1000) / 1000


class MemoryApprovalStore:
    """ApprovalStore kept in this process."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 retention_seconds: int = RETENTION_SECONDS,
                 max_open: int = MAX_OPEN_APPROVALS,
                 max_pending_per_tenant: int = DEFAULT_MAX_PENDING_PER_TENANT) -> None:
        self._clock = clock
        self._max_open = max_open
        self._max_pending = max_pending_per_tenant
        self._open: set[str] = set()
        self._pending: dict[str, set[str]] = {}  # tenant -> its pending ids
        self._retention = retention_seconds
        self._records: dict[str, Approval] = {}
        self._by_request: dict[tuple[str, str], str] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap of (expires_at, id); stale skipped
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._calls = 0
        self.on_expired: ExpiredListener | None = None

    # -- helpers -------------------------------------------------------------------------

    def _now(self) -> float:
        return _ms(self._clock())

    def _put(self, a: Approval) -> Approval:
        self._records[a.approval_id] = a
        aid, tenant = a.approval_id, a.draft.tenant
        if a.open:
            heapq.heappush(self._deadlines, (a.expires_at, aid))
            self._open.add(aid)
        else:
            self._open.discard(aid)
        if a.status == PENDING:
            self._pending.setdefault(tenant, set()).add(aid)
        else:
            mine = self._pending.get(tenant)
            if mine is not None:
                mine.discard(aid)
                if not mine:
                    del self._pending[tenant]
            for fut in self._waiters.pop(aid, ()):  # no longer pending: wake its waiters
                if not fut.done():
                    fut.set_result(None)
        return a

    def _sweep(self, now: float) -> list[Approval]:
        """Expire open approvals past their deadline; drop records past retention."""
        out: list[Approval] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            exp, aid = heapq.heappop(heap)
            a = self._records.get(aid)
            if a is None or not a.open or a.expires_at != exp:
                continue
            out.append(self._put(a.with_(status=EXPIRED)))
        self._calls += 1
        if self._calls % _PURGE_EVERY == 0:
            self._purge(now)
        return out

    def _purge(self, now: float) -> None:
        dead = [i for i, a in self._records.items()
                if not a.open and now >= a.expires_at + self._retention]
        for aid in dead:
            del self._records[aid]
        live = set(self._records)
        for key in [k for k, v in self._by_request.items() if v not in live]:
            del self._by_request[key]

    async def _report(self, expired: list[Approval]) -> None:
        if not expired:
            return
        if self.on_expired is not None:
            await self.on_expired(tuple(expired))

    def _find(self, approval_id: str) -> Approval:
        a = self._records.get(approval_id)
        if a is None:
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return a

    # -- the store -----------------------------------------------------------------------

    async def create(self, draft: Draft) -> CreateResult:
        check_draft(draft)
        now = self._now()
        expired = self._sweep(now)
        result: CreateResult | None = None
        key = (draft.tenant, draft.request_id)
        if draft.request_id:
            prior = self._records.get(self._by_request.get(key, ""))
            if (prior is not None and prior.status in (PENDING, APPROVED, DENIED)
                    and now < prior.expires_at
                    and prior.draft.action_hash == draft.action_hash):
                result = CreateResult(prior, created=False)
        if result is None and len(self._pending.get(draft.tenant, ())) >= self._max_pending:
            await self._report(expired)
            raise TenantFull(tenant_full_message(draft.tenant, self._max_pending))
        if result is None and len(self._open) >= self._max_open:
            await self._report(expired)
            raise StoreFull(f"{self._max_open} approvals are open already")
        if result is None:
            a = Approval(
                approval_id=new_approval_id(), status=PENDING, draft=draft,
                created_at=now, expires_at=_ms(now + draft.ttl_seconds),
            )
            self._put(a)
            if draft.request_id:
                self._by_request[key] = a.approval_id
            result = CreateResult(a, created=True)
        await self._report(expired)
        return result

    async def get(self, approval_id: str) -> Approval:
        check_id(approval_id)
        expired = self._sweep(self._now())
        await self._report(expired)
        return self._find(approval_id)

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        check_id(approval_id)
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, timeout)
        while True:
            a = await self.get(approval_id)
            left = end - loop.time()
            if a.status != PENDING or left <= 0:
                return a
            # Wake at a transition of this approval, at its own expiry, or when the wait ends.
            until_expiry = max(0.0, a.expires_at - self._now()) + 0.001
            fut = loop.create_future()
            waiters = self._waiters.setdefault(approval_id, set())
            waiters.add(fut)
            try:
                async with asyncio.timeout(min(left, until_expiry, 1.0)):
                    await fut
            except TimeoutError:
                pass
            finally:
                waiters.discard(fut)
                if not waiters and self._waiters.get(approval_id) is waiters:
                    del self._waiters[approval_id]

    async def list(
        self, status: str = "", approver: str = "", tenant: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[Approval]:
        limit = check_list(status, approver, tenant, limit)
        expired = self._sweep(self._now())
        out: list[Approval] = []
        for a in reversed(self._records.values()):  # insertion order: oldest first
            if status and a.status != status:
                continue
            if tenant and a.draft.tenant != tenant:
                continue
            if approver and not a.may_be_resolved_by(approver):
                continue
            out.append(a)
            if len(out) >= limit:
                break
        await self._report(expired)
        return out

    async def resolve(
        self, approval_id: str, approve: bool, reviewer: str, reason: str
    ) -> Approval:
        check_resolution(approval_id, approve, reviewer, reason)
        now = self._now()
        expired = self._sweep(now)
        try:
            a = self._find(approval_id)
            if a.status != PENDING:
                raise FailedPrecondition(precondition_message(a))
            if approve:
                a = a.with_(status=APPROVED, expires_at=_ms(now + a.draft.ttl_seconds))
            else:
                a = a.with_(status=DENIED)
            a = self._put(a.with_(resolved_at=now, reviewer=reviewer, resolution_reason=reason))
        finally:
            await self._report(expired)
        return a

    async def consume(self, approval_id: str, action_hash: str, decision_id: str) -> ConsumeResult:
        check_id(approval_id)
        now = self._now()
        expired = self._sweep(now)
        a = self._records.get(approval_id)
        if a is None:
            result = ConsumeResult(False, NOT_FOUND, None)
        elif a.draft.action_hash != action_hash:
            result = ConsumeResult(False, MISMATCH, a)
        elif a.status != APPROVED:
            result = ConsumeResult(False, a.status, a)
        else:
            a = self._put(a.with_(status=CONSUMED, consumed_at=now, consumed_by=decision_id))
            key = (a.draft.tenant, a.draft.request_id)
            if self._by_request.get(key) == approval_id:
                del self._by_request[key]
            result = ConsumeResult(True, "", a)
        await self._report(expired)
        return result

    async def expire_due(self) -> tuple[Approval, ...]:
        expired = self._sweep(self._now())
        await self._report(expired)
        return tuple(expired)

    async def start(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["MemoryApprovalStore", "CONSUMED", "DENIED", "EXPIRED"]
