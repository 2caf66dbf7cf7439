"""The Redis budget store: counters and reservations in Redis, changed only by Lua scripts.

Each operation is one script (lua/reserve.lua, commit.lua, release.lua, get.lua,
each prefixed with lua/lib.lua) run atomically with EVALSHA (the SHA1 is computed
locally). The scripts are loaded with SCRIPT LOAD by `start()` and by `ping()`
after a failure (the servicer's health probe calls it every second), and a call
that meets NOSCRIPT anyway (a restarted Redis, a node that never saw the script)
is re-sent as EVAL, which runs the script and caches it, in the same time bound.
Time comes from Redis TIME inside the scripts, so replicas with skewed clocks
agree.

Keys of one fleet live under the prefix `proctor:{FLEET}:` (the hash tag is the
fleet name), passed as KEYS[1]; the scripts derive every other name from it
(counters of the current window included), so one script touches one slot and
runs on Redis Cluster.

URLs: `redis://HOST:PORT/DB` (or rediss://, unix://) is one Redis;
`redis://HOST:PORT?cluster=1` or `redis+cluster://HOST:PORT` is a Redis Cluster
reached through that startup node (redis.asyncio.RedisCluster). One Redis over
redis:// or unix:// is reached through resp.RespClient (one pipelined
connection; redis.asyncio's per-command overhead was most of what ReserveBudget
spent beyond the round trip); rediss:// and Cluster through redis-py.

Faults: connect and command timeouts of 1 s, no client-side retries, and a
hard 1 s bound per call: an unreachable Redis is StoreUnavailable (UNAVAILABLE)
within about a second, fail closed. The store reconnects on the next call. A
retry after a lost answer is safe: reservations are keyed by their id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from .resp import RespClient, bulk
from .store import (
    RECORD_MARGIN_SECONDS,
    BudgetDef,
    BudgetStatus,
    CommitResult,
    Counter,
    FailedPrecondition,
    ReleaseResult,
    ReservationNotFound,
    ReserveResult,
    StoreUnavailable,
    check_commit,
    check_fleet,
    check_release,
    check_reservation,
    plan_get,
    plan_reserve,
    status_of,
)
from .windows import counter_key_parts

LUA_DIR = Path(__file__).with_name("lua")
SOCKET_TIMEOUT = 1.0
CALL_TIMEOUT = 1.0
START_TIMEOUT = 5.0
_TRANSIENT = ("LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY")
# a planned reservation: its counters, reserve.lua's budget arguments, and those as RESP
# (the command's head up to the script's key; its tail from the record margin on)
_Planned = tuple[tuple[Counter, ...], tuple[str, ...], bytes, bytes]


def _script(name: str) -> str:
    return (LUA_DIR / "lib.lua").read_text() + "\n" + (LUA_DIR / f"{name}.lua").read_text()


def parse_redis_url(url: str) -> tuple[str, bool]:
    """(url for redis-py, is_cluster): `+cluster` schemes and `?cluster=1` mean Cluster."""
    parts = urlsplit(url)
    scheme = parts.scheme
    cluster = False
    if scheme.endswith("+cluster"):
        scheme, cluster = scheme[: -len("+cluster")], True
    query = []
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k == "cluster":
            cluster = cluster or v.lower() in ("1", "true", "yes", "on")
        else:
            query.append((k, v))
    clean = urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))
    if not parts.netloc and parts.path:  # unix:///path: urlunsplit would drop the "//"
        clean = f"{scheme}://{clean[len(scheme) + 1:]}"
    return clean, cluster


def connect(url: str) -> Any:
    """A redis.asyncio client (Redis or RedisCluster) with bounded, non-retrying timeouts."""
    clean, cluster = parse_redis_url(url)
    opts: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": True,
    }
    if cluster:
        return RedisCluster.from_url(clean, **opts)
    return aioredis.Redis.from_url(clean, **opts)


def connect_store_client(url: str) -> Any:
    """The budget store's client: RespClient for one Redis over redis:// or unix://,
    redis-py (`connect`) for rediss:// and Cluster. Same timeouts, no retries either way."""
    clean, cluster = parse_redis_url(url)
    parts = urlsplit(clean)
    options = {k for k, _ in parse_qsl(parts.query)}
    if not cluster and parts.scheme in ("redis", "unix") and options <= {"db"}:
        return RespClient(clean, timeout=CALL_TIMEOUT)
    return connect(url)  # TLS, Cluster, or options only redis-py understands


class _Script:
    def __init__(self, name: str) -> None:
        self.name = name
        self.text = _script(name)
        self.sha = hashlib.sha1(self.text.encode()).hexdigest()


class RedisBudgetStore:
    """BudgetStore in Redis or Redis Cluster (see the module docstring)."""

    def __init__(self, client: Any, fleet: str = "default", *, owns_client: bool = True,
                 record_margin_seconds: int = RECORD_MARGIN_SECONDS) -> None:
        self._r = client
        self._margin_ms = record_margin_seconds * 1000
        self._prefix = f"proctor:{{{check_fleet(fleet)}}}:"
        self._owns = owns_client
        self._scripts = {n: _Script(n) for n in ("reserve", "commit", "release", "get")}
        self._loaded = False
        # RespClient bounds each command itself (a deadline per command, one timer per
        # connection), which spares a timeout context per call on the hot path.
        self._lean = isinstance(client, RespClient)
        self._args_for: tuple[BudgetDef, ...] | None = None
        # (unit, tenant, agent, run) -> _Planned
        self._args: dict[tuple[str, str, str, str], _Planned] = {}

    @classmethod
    def from_url(cls, url: str, fleet: str = "default", **kwargs: Any) -> RedisBudgetStore:
        return cls(connect_store_client(url), fleet, **kwargs)

    @property
    def prefix(self) -> str:
        return self._prefix

    # -- plumbing ------------------------------------------------------------------------

    async def _load(self) -> None:
        for s in self._scripts.values():
            sha = await self._r.script_load(s.text)
            if isinstance(sha, dict):  # a cluster answers per node
                sha = next(iter(sha.values()))
            if sha != s.sha:
                raise RuntimeError(f"SCRIPT LOAD of {s.name}.lua returned {sha}, expected {s.sha}")
        self._loaded = True

    async def _run(self, name: str, args: list[Any], packed: bytes = b"") -> Any:
        """EVALSHA within CALL_TIMEOUT; on NOSCRIPT (a restarted Redis, a node that never saw
        the script) EVAL, which runs the script and caches it, in the same bound. `packed`:
        the EVALSHA as RESP already (RespClient only), from cached parts."""
        s = self._scripts[name]
        try:
            if self._lean:
                deadline = asyncio.get_running_loop().time() + CALL_TIMEOUT
                try:
                    if packed:
                        return await self._r.send_packed(packed, deadline)
                    return await self._r.evalsha(s.sha, 1, self._prefix, *args,
                                                 deadline=deadline)
                except NoScriptError:
                    self._loaded = False
                    return await self._r.eval(s.text, 1, self._prefix, *args,
                                              deadline=deadline)
            async with asyncio.timeout(CALL_TIMEOUT):
                try:
                    return await self._r.evalsha(s.sha, 1, self._prefix, *args)
                except NoScriptError:
                    self._loaded = False
                    return await self._r.eval(s.text, 1, self._prefix, *args)
        except ResponseError as e:
            if str(e).startswith(_TRANSIENT):
                raise StoreUnavailable(f"budget store: redis {e}") from e
            raise
        except (RedisError, OSError, TimeoutError) as e:
            self._loaded = False  # a restarted Redis has lost its scripts: re-load on ping
            raise StoreUnavailable(f"budget store unavailable: {type(e).__name__}: {e}") from e

    def _plan(self, counters: tuple[Counter, ...]) -> _Planned:
        args = reserve_args(counters)
        head = b"*%d\r\n" % (9 + len(args)) + b"".join(
            bulk(a) for a in ("EVALSHA", self._scripts["reserve"].sha, 1, self._prefix))
        tail = bulk(self._margin_ms) + bulk(len(counters)) + b"".join(bulk(a) for a in args)
        return counters, args, head, tail

    @staticmethod
    def _reserve_packed(
        head: bytes, reservation_id: str, amount: int, ttl_ms: int, tail: bytes
    ) -> bytes:
        """reserve.lua's EVALSHA in RESP, from the parts cached per plan: the same bytes
        as pack(("EVALSHA", sha, 1, prefix, reservation_id, amount, ttl_ms, margin, N,
        *budget arguments)) at a fraction of its cost."""
        r, a, t = reservation_id.encode(), b"%d" % amount, b"%d" % ttl_ms
        return b"%b$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (
            head, len(r), r, len(a), a, len(t), t, tail)

    @staticmethod
    def _budget_arg(counters: tuple[Counter, ...]) -> str:
        return json.dumps([
            [c.budget_id, c.unit, c.scope, c.scope_key, c.kind, str(c.limit), c.window,
             c.window_seconds, c.window_spec]
            for c in counters
        ], separators=(",", ":"))

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
        # The same callers reserve again and again: the budget argument of each
        # (unit, scope keys) is kept per budget set, and a hit checks only the fields
        # that change per call (plan_reserve validated the rest when it was built).
        if budgets is not self._args_for:
            self._args.clear()
            self._args_for = budgets
        key = (unit, tenant, agent_id, run_id)
        planned = self._args.get(key)
        if planned is not None:
            check_reservation(reservation_id, amount, ttl_seconds)
        else:
            planned = self._plan(plan_reserve(
                budgets, reservation_id, tenant, agent_id, run_id, unit, amount, ttl_seconds
            ))
            if len(self._args) >= _ARGS_CACHED:
                self._args.clear()
            self._args[key] = planned
        counters, args, head, tail = planned
        ttl_ms = ttl_seconds * 1000
        packed = b""
        if self._lean:
            packed = self._reserve_packed(head, reservation_id, amount, ttl_ms, tail)
        # the arguments in full all the same: a NOSCRIPT falls back to EVAL with them
        raw = await self._run("reserve", [
            reservation_id, amount, ttl_ms, self._margin_ms, len(counters), *args], packed)
        if raw[:2] == "F,":
            return _new_reservation(raw, counters, reservation_id)
        reply = json.loads(raw)  # an id seen before: its first answer
        return ReserveResult(
            bool(reply["g"]), reply["r"], _statuses(reply["s"]), reservation_id,
            int(reply["e"]) / 1000,
        )

    async def commit(self, reservation_id: str, actual: int) -> CommitResult:
        check_commit(reservation_id, actual)
        reply = _checked(await self._run("commit", [reservation_id, actual]))
        return CommitResult(reservation_id, _statuses(reply["s"]))

    async def release(self, reservation_id: str) -> ReleaseResult:
        check_release(reservation_id)
        reply = _checked(await self._run("release", [reservation_id]))
        return ReleaseResult(reservation_id, _statuses(reply["s"]))

    async def get(
        self,
        budgets: tuple[BudgetDef, ...],
        tenant: str,
        agent_id: str,
        run_id: str,
        budget_id: str = "",
    ) -> tuple[BudgetStatus, ...]:
        counters = plan_get(budgets, tenant, agent_id, run_id, budget_id)
        if not counters:
            return ()
        reply = json.loads(await self._run("get", [self._budget_arg(counters)]))
        return _statuses(reply["s"])

    async def start(self) -> None:
        """Connect (discovering a cluster's nodes) and SCRIPT LOAD every script, within
        START_TIMEOUT; StoreUnavailable when Redis does not answer."""
        await self._start(START_TIMEOUT)

    async def ping(self) -> None:
        """PING within CALL_TIMEOUT (for health); after a failure or a NOSCRIPT, also re-load
        the scripts within the same bound."""
        await self._start(CALL_TIMEOUT)

    async def _start(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._r.ping()
                if not self._loaded:
                    await self._load()
        except (RedisError, OSError, TimeoutError) as e:
            self._loaded = False
            raise StoreUnavailable(f"budget store unavailable: {type(e).__name__}: {e}") from e

    async def close(self) -> None:
        if self._owns:
            await self._r.aclose()


def _checked(raw: str) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(raw)
    if reply["k"] == "not_found":
        raise ReservationNotFound(reply["m"])
    if reply["k"] == "precondition":
        raise FailedPrecondition(reply["m"])
    return reply


def _new_reservation(
    raw: str, counters: tuple[Counter, ...], reservation_id: str
) -> ReserveResult:
    """The answer of reserve.lua for a new reservation: "F,granted,refusing index,expires ms"
    then "used,reserved,window end ms" per counter, in the order of `counters`."""
    parts = raw.split(",")
    if len(parts) != 4 + 3 * len(counters):
        raise StoreUnavailable(f"budget store: reserve.lua answered {raw[:200]!r}")
    refusing = int(parts[2])
    statuses = tuple(
        status_of(c, int(parts[i]), int(parts[i + 1]), int(parts[i + 2]))
        for c, i in zip(counters, range(4, len(parts), 3), strict=True)
    )
    return ReserveResult(
        parts[1] == "1", counters[refusing - 1].budget_id if refusing else "", statuses,
        reservation_id, int(parts[3]) / 1000,
    )


def _statuses(raw: Any) -> tuple[BudgetStatus, ...]:
    if not raw:
        return ()
    out = []
    for bid, unit, scope, key, kind, limit, used, reserved, spec, wend in raw:
        wend_ms = int(wend)
        # positional: BudgetStatus(budget_id, unit, scope, scope_key, kind, limit, used,
        # reserved, window, window_resets_at)
        out.append(BudgetStatus(bid, unit, scope, key, kind, int(limit), int(used),
                                int(reserved), spec, wend_ms / 1000 if wend_ms else None))
    return tuple(out)


def reserve_args(counters: tuple[Counter, ...]) -> tuple[str, ...]:
    """reserve.lua's 8 arguments per budget (see its header): the counter key around its
    window start, the checks, and the record's JSON of the slot up to its window bounds."""
    out: list[str] = []
    for c in counters:
        slot = json.dumps([c.budget_id, c.unit, c.scope, c.scope_key, c.kind, str(c.limit),
                           c.window_spec], ensure_ascii=False, separators=(",", ":"))
        out += [
            *counter_key_parts(c.scope, c.window_spec, c.budget_id, c.scope_key),
            c.kind, str(c.limit), c.window, str(c.window_seconds),
            slot[:-1] + ",", json.dumps(c.budget_id, ensure_ascii=False),
        ]
    return tuple(out)


_ARGS_CACHED = 4096  # (unit, tenant, agent, run) combinations kept; all dropped when full
