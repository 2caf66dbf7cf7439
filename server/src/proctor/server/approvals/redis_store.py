"""The Redis approval store: approvals in Redis (or Redis Cluster), changed only by Lua scripts.

Each operation is one script (lua/create.lua, get.lua, resolve.lua,
consume.lua, list.lua, each prefixed with lua/lib.lua, which documents the
keys) run atomically with EVALSHA; NOSCRIPT falls back to EVAL. Every script
first expires the open approvals past their deadline (Redis TIME, so replicas
with skewed clocks agree) and returns them, so exactly one caller, on
whichever server, reports each expiry. Several servers on one Redis therefore
see one set of approvals and audit each step once.

Keys of one fleet live under `proctor:{apv:FLEET}:` (one hash tag: every key a
script touches is in one slot, so the scripts run on Cluster). URLs and
timeouts are the budget store's (server/budgets/redis_store.py): connect and
command timeouts of 1 s, no client retries, a hard 1 s bound per call, so an
unreachable Redis is StoreUnavailable within about a second. Its client too:
budgets/resp.RespClient for one Redis (redis.asyncio's per-command machinery
made a require_approval retry cost ~0.25 ms more at one call in flight), redis-py
for Cluster and TLS.

WaitApproval polls (every POLL_SECONDS): simple, works the same on Cluster,
and costs one small script call per waiter per poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..budgets.redis_store import connect_store_client
from .store import (
    DEFAULT_LIST_LIMIT,
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
    check_draft,
    check_id,
    check_list,
    check_resolution,
    draft_from_body,
    new_approval_id,
    precondition_message,
)

LUA_DIR = Path(__file__).with_name("lua")
CALL_TIMEOUT = 1.0
START_TIMEOUT = 5.0
POLL_SECONDS = 0.2
LIST_SCAN_MAX = 20_000
_TRANSIENT = ("LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY")
_SCRIPTS = ("create", "get", "resolve", "consume", "list")


class _Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.text = (LUA_DIR / "lib.lua").read_text() + "\n" + (LUA_DIR / f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()


def check_fleet(fleet: str) -> str:
    if not fleet or len(fleet) > 64 or "{" in fleet or "}" in fleet:
        raise ValueError(f"approval fleet name must be 1..64 characters without braces: {fleet!r}")
    return fleet


class RedisApprovalStore:
    """ApprovalStore in Redis or Redis Cluster (see the module docstring)."""

    def __init__(self, client: Any, fleet: str = "default", *, owns_client: bool = True,
                 retention_seconds: int = RETENTION_SECONDS,
                 max_open: int = MAX_OPEN_APPROVALS) -> None:
        self._r = client
        self._max_open = max_open
        self._prefix = f"proctor:{{apv:{check_fleet(fleet)}}}:"
        self._owns = owns_client
        self._retention_ms = retention_seconds * 1000
        self._scripts = {n: _Script(n) for n in _SCRIPTS}
        self._loaded = False
        self.on_expired: ExpiredListener | None = None

    @classmethod
    def from_url(cls, url: str, fleet: str = "default") -> RedisApprovalStore:
        return cls(connect_store_client(url), fleet)

    @property
    def prefix(self) -> str:
        return self._prefix

    # -- plumbing ------------------------------------------------------------------------

    async def _run(self, name: str, *args: Any) -> dict[str, Any]:
        """One script within CALL_TIMEOUT; report what it expired; return its reply."""
        s = self._scripts[name]
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                try:
                    raw = await self._r.evalsha(s.sha, 1, self._prefix, *args)
                except NoScriptError:
                    self._loaded = False
                    raw = await self._r.eval(s.text, 1, self._prefix, *args)
        except ResponseError as e:
            if str(e).startswith(_TRANSIENT):
                raise StoreUnavailable(f"approval store: redis {e}") from e
            raise
        except (RedisError, OSError, TimeoutError) as e:
            self._loaded = False
            raise StoreUnavailable(
                f"approval store unavailable: {type(e).__name__}: {e}"
            ) from e
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
            "create", new_approval_id(), body, draft.ttl_seconds, draft.tenant,
            draft.request_id, draft.action_hash, json.dumps(list(draft.approvers)),
            self._retention_ms, self._max_open,
        )
        if reply["k"] == "full":
            raise StoreFull(f"{self._max_open} approvals are open already")
        return CreateResult(_approval(reply["a"]), created=reply["k"] == "created")

    async def get(self, approval_id: str) -> Approval:
        check_id(approval_id)
        reply = await self._run("get", approval_id)
        if reply["k"] == "not_found":
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        return _approval(reply["a"])

    async def wait(self, approval_id: str, timeout: float) -> Approval:
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, timeout)
        while True:
            a = await self.get(approval_id)
            left = end - loop.time()
            if a.status != PENDING or left <= 0:
                return a
            await asyncio.sleep(min(POLL_SECONDS, left))

    async def list(
        self, status: str = "", approver: str = "", tenant: str = "",
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[Approval]:
        limit = check_list(status, approver, tenant, limit)
        reply = await self._run("list", status, approver, tenant, limit, LIST_SCAN_MAX)
        return list(_records(reply.get("l")))

    async def resolve(
        self, approval_id: str, approve: bool, reviewer: str, reason: str
    ) -> Approval:
        check_resolution(approval_id, approve, reviewer, reason)
        reply = await self._run(
            "resolve", approval_id, "1" if approve else "0", reviewer, reason, self._retention_ms
        )
        if reply["k"] == "not_found":
            raise ApprovalNotFound(f"no approval {approval_id!r}")
        a = _approval(reply["a"])
        if reply["k"] == "precondition":
            raise FailedPrecondition(precondition_message(a))
        return a

    async def consume(self, approval_id: str, action_hash: str, decision_id: str) -> ConsumeResult:
        check_id(approval_id)
        reply = await self._run("consume", approval_id, action_hash, decision_id)
        kind = reply["k"]
        if kind == "not_found":
            return ConsumeResult(False, NOT_FOUND, None)
        a = _approval(reply["a"])
        if kind == "consumed":
            return ConsumeResult(True, "", a)
        return ConsumeResult(False, MISMATCH if kind == "mismatch" else a.status, a)

    async def expire_due(self) -> tuple[Approval, ...]:
        reply = await self._run("get", "")
        return _records(reply.get("x"))

    async def start(self) -> None:
        await self._start(START_TIMEOUT)

    async def ping(self) -> None:
        await self._start(CALL_TIMEOUT)

    async def _start(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._r.ping()
                if not self._loaded:
                    for s in self._scripts.values():
                        await self._r.script_load(s.text)
                    self._loaded = True
        except (RedisError, OSError, TimeoutError) as e:
            self._loaded = False
            raise StoreUnavailable(
                f"approval store unavailable: {type(e).__name__}: {e}"
            ) from e

    async def close(self) -> None:
        if self._owns:
            await self._r.aclose()


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
