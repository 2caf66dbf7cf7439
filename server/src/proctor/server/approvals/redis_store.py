"""The Redis approval store: approvals in Redis (or Redis Cluster), changed only by Lua scripts.

Each operation is one script of the Redis layer (redis/lua/approvals/: create, get,
resolve, consume, list, status, each prefixed with lib.lua, which documents the
keys) sent by its ScriptRunner (EVALSHA, NOSCRIPT answered by EVAL, the 1 s call
bound, errors mapped to StoreUnavailable). Every script first expires the open
approvals past their deadline (Redis TIME, so replicas with skewed clocks agree) and
returns them, so exactly one caller, on whichever server, reports each expiry.
Several servers on one Redis therefore see one set of approvals and audit each step
once.

Keys of one fleet live under `proctor:{apv:FLEET}:` (one hash tag: every key a
script touches is in one slot, so the scripts run on Cluster). The store shares the
process's RedisLayer with the budget store; `from_url` builds one of its own.

WaitApproval: the store's waiters are polled together, every POLL_SECONDS, by one
task that asks status.lua for the status of every approval waited on (in chunks of
POLL_CHUNK): one small script call per poll, however many wait. A wait that ends
answers the approval as last seen, with no further call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from ..redis import Durability, RedisLayer, RedisUnavailable, Script
from .store import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MAX_PENDING_PER_TENANT,
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
    StoreUnavailable,
    TenantFull,
    check_draft,
    check_id,
    check_list,
    check_resolution,
    draft_from_body,
    new_approval_id,
    precondition_message,
    tenant_full_message,
)

log = logging.getLogger("proctor.approvals")
POLL_SECONDS = 0.2
POLL_CHUNK = 1000
LIST_SCAN_MAX = 20_000
CREATE, GET, RESOLVE, CONSUME, LIST, STATUS = (
    Script.load("approvals", n)
    for n in ("create", "get", "resolve", "consume", "list", "status"))
SCRIPTS = (CREATE, GET, RESOLVE, CONSUME, LIST, STATUS)


def check_fleet(fleet: str) -> str:
    if not fleet or len(fleet) > 64 or "{" in fleet or "}" in fleet:
        raise ValueError(f"approval fleet name must be 1..64 characters without braces: {fleet!r}")
    return fleet


class RedisApprovalStore:
    """ApprovalStore in Redis or Redis Cluster (see the module docstring)."""

    def __init__(self, redis: RedisLayer, fleet: str = "default", *, owns: bool = False,
                 retention_seconds: int = RETENTION_SECONDS,
                 max_open: int = MAX_OPEN_APPROVALS,
                 max_pending_per_tenant: int = DEFAULT_MAX_PENDING_PER_TENANT) -> None:
        self._redis = redis
        self._runner = redis.runner
        self._max_open = max_open
        self._max_pending = max_pending_per_tenant
        self._prefix = f"proctor:{{apv:{check_fleet(fleet)}}}:"
        self._keys = (self._prefix,)
        self._owns = owns
        self._retention_ms = retention_seconds * 1000
        redis.register(SCRIPTS, self._prefix)
        self._watched: dict[str, set[asyncio.Future[None]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self.on_expired: ExpiredListener | None = None

    @classmethod
    def from_url(cls, url: str, fleet: str = "default", *,
                 durability: Durability | None = None, **kwargs: Any) -> RedisApprovalStore:
        """A store on a RedisLayer of its own (closed with the store)."""
        return cls(RedisLayer.from_url(url, durability=durability), fleet, owns=True, **kwargs)

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def redis(self) -> RedisLayer:
        return self._redis

    # -- plumbing ------------------------------------------------------------------------

    async def _run(self, script: Script, *args: Any) -> dict[str, Any]:
        """One script; report what it expired; return its reply."""
        try:
            raw = await self._runner.run(script, self._keys, args)
        except RedisUnavailable as e:
            raise StoreUnavailable(f"approval store unavailable: {e.message}") from e
        reply: dict[str, Any] = json.loads(raw)
        expired = _records(reply.get("x"))
        if expired and self.on_expired is not None:
            await self.on_expired(expired)
        return reply

    # -- the store -----------------------------------------------------------------------

    async def create(self, draft: Draft) -> CreateResult:
        check_draft(draft)
        body = json.dumps(draft.body(), separators=(",", ":"), ensure_ascii=False)
        reply = await self._run(
            CREATE, new_approval_id(), body, draft.ttl_seconds, draft.tenant,
            draft.request_id, draft.action_hash, json.dumps(list(draft.approvers)),
            self._retention_ms, self._max_open, self._max_pending,
        )
        if reply["k"] == "tenant_full":
            raise TenantFull(tenant_full_message(draft.tenant, self._max_pending))
        if reply["k"] == "full":
            raise StoreFull(f"{self._max_open} approvals are open already")
        return CreateResult(_approval(reply["a"]), created=reply["k"] == "created")

    async def get(self, approval_id: str) -> Approval:
        check_id(approval_id)
        reply = await self._run(GET, approval_id)
        if reply["k"] == "not_found":
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return _approval(reply["a"])

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        loop = asyncio.get_running_loop()
        a = await self.get(approval_id)
        if a.status != PENDING or timeout <= 0:
            return a
        fut = loop.create_future()
        waiters = self._watched.setdefault(approval_id, set())
        waiters.add(fut)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll(), name="approval-waiters")
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return a  # still pending as last seen: no call to Redis as the wait ends
        finally:
            waiters.discard(fut)
            if not waiters and self._watched.get(approval_id) is waiters:
                del self._watched[approval_id]
        return await self.get(approval_id)

    async def _poll(self) -> None:
        """Wake the waiters of every approval that is no longer pending (module docstring);
        ends when nobody waits. A poll that fails is tried again at the next one."""
        while self._watched:
            await asyncio.sleep(POLL_SECONDS)
            ids = list(self._watched)
            for i in range(0, len(ids), POLL_CHUNK):
                chunk = ids[i:i + POLL_CHUNK]
                try:
                    reply = await self._run(STATUS, *chunk)
                except StoreUnavailable as e:
                    log.debug("approval waiters: poll failed: %s", e.message)
                    break
                for aid, status in zip(chunk, reply.get("st") or (), strict=False):
                    if status != PENDING:
                        for fut in self._watched.get(aid, ()):
                            if not fut.done():
                                fut.set_result(None)

    async def list(
        self, status: str = "", approver: str = "", tenant: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[Approval]:
        limit = check_list(status, approver, tenant, limit)
        reply = await self._run(LIST, status, approver, tenant, limit, LIST_SCAN_MAX)
        return list(_records(reply.get("l")))

    async def resolve(
        self, approval_id: str, approve: bool, reviewer: str, reason: str
    ) -> Approval:
        check_resolution(approval_id, approve, reviewer, reason)
        reply = await self._run(
            RESOLVE, approval_id, "1" if approve else "0", reviewer, reason, self._retention_ms
        )
        if reply["k"] == "not_found":
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        a = _approval(reply["a"])
        if reply["k"] == "precondition":
            raise FailedPrecondition(precondition_message(a))
        return a

    async def consume(self, approval_id: str, action_hash: str, decision_id: str) -> ConsumeResult:
        check_id(approval_id)
        reply = await self._run(CONSUME, approval_id, action_hash, decision_id)
        kind = reply["k"]
        if kind == "not_found":
            return ConsumeResult(False, NOT_FOUND, None)
        a = _approval(reply["a"])
        if kind == "consumed":
            return ConsumeResult(True, "", a)
        return ConsumeResult(False, MISMATCH if kind == "mismatch" else a.status, a)

    async def expire_due(self) -> tuple[Approval, ...]:
        reply = await self._run(GET, "")
        return _records(reply.get("x"))

    async def start(self) -> None:
        """Connect, check the Redis's durability and load the scripts (RedisLayer.start);
        StoreUnavailable when Redis cannot be reached or is refused."""
        try:
            await self._redis.start()
        except RedisUnavailable as e:
            raise StoreUnavailable(f"approval store unavailable: {e.message}") from e

    async def ping(self) -> None:
        """For health (RedisLayer.ping): StoreUnavailable when Redis cannot serve."""
        try:
            await self._redis.ping()
        except RedisUnavailable as e:
            raise StoreUnavailable(f"approval store unavailable: {e.message}") from e

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._owns:
            await self._redis.close()


def _seconds(ms: Any) -> float:
    return int(ms) / 1000 if ms else 0.0


def _approval(r: dict[str, Any]) -> Approval:
    return Approval(
        approval_id=r["id"],
        status=r["st"],
        draft=draft_from_body(json.loads(r["body"])),
        created_at=_seconds(r.get("cr")),
        expires_at=_seconds(r.get("exp")),
        resolved_at=_seconds(r.get("res")),
        reviewer=r.get("rv", ""),
        resolution_reason=r.get("rr", ""),
        consumed_at=_seconds(r.get("cat")),
        consumed_by=r.get("cby", ""),
    )


def _records(raw: Any) -> tuple[Approval, ...]:
    # cjson writes an empty array as {}.
    if not raw or not isinstance(raw, list):
        return ()
    return tuple(_approval(r) for r in raw)
