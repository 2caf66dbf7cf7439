"""The Redis budget store: counters and reservations in Redis, changed only by Lua scripts.

Each operation is one script of the Redis layer (redis/lua/budgets/: reserve, commit,
release, get, each prefixed with lib.lua, which has the key layout) sent by its
ScriptRunner: EVALSHA within the 1 s call bound, NOSCRIPT answered by EVAL, errors
mapped to StoreUnavailable (fail closed). Time is Redis TIME inside the scripts, so
replicas with skewed clocks agree.

Keys of one fleet live under the prefix `proctor:{FLEET}:` (the hash tag is the
fleet name), passed as KEYS[1]; the scripts derive every other name from it
(counters of the current window included), so one script touches one slot and
runs on Redis Cluster.

The store shares the process's RedisLayer (its connection, scripts and durability
watch) with the approval store; `from_url` builds one of its own (tests, tools). A
retry after a lost answer is safe: reservations are keyed by their id.
"""

from __future__ import annotations

import json
from typing import Any

from ..redis import (
    Durability,
    Packed,
    RedisLayer,
    RedisUnavailable,
    Script,
    pack_args,
)
from .plans import (
    check_commit,
    check_release,
    check_reservation,
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
    StoreUnavailable,
    check_fleet,
)
from .windows import counter_key_parts

RESERVE, COMMIT, RELEASE, GET = (Script.load("budgets", n)
                                 for n in ("reserve", "commit", "release", "get"))
SCRIPTS = (RESERVE, COMMIT, RELEASE, GET)
_ARGS_CACHED = 4096  # (unit, tenant, agent, run) combinations kept; all dropped when full


class RedisBudgetStore:
    """BudgetStore in Redis or Redis Cluster (see the module docstring)."""

    def __init__(self, redis: RedisLayer, fleet: str = "default", *, owns: bool = False,
                 record_margin_seconds: int = RECORD_MARGIN_SECONDS) -> None:
        self._redis = redis
        self._runner = redis.runner
        self._margin_ms = record_margin_seconds * 1000
        self._prefix = f"proctor:{{{check_fleet(fleet)}}}:"
        self._keys = (self._prefix,)
        self._owns = owns
        redis.register(SCRIPTS, self._prefix)
        # reserve.lua's per-request arguments, kept per budget set: (unit, tenant, agent,
        # run) -> (counters, those arguments encoded once)
        self._plans_for: tuple[BudgetDef, ...] | None = None
        self._plans: dict[tuple[str, str, str, str], tuple[tuple[Counter, ...], Packed]] = {}

    @classmethod
    def from_url(cls, url: str, fleet: str = "default", *,
                 durability: Durability | None = None, **kwargs: Any) -> RedisBudgetStore:
        """A store on a RedisLayer of its own (closed with the store)."""
        return cls(RedisLayer.from_url(url, durability=durability), fleet, owns=True, **kwargs)

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def redis(self) -> RedisLayer:
        return self._redis

    async def _run(self, script: Script, args: tuple[Any, ...], tail: Packed | None = None
                   ) -> dict[str, Any]:
        try:
            if tail is None:
                raw = await self._runner.run(script, self._keys, args)
            else:
                raw = await self._runner.run(script, self._keys, args, tail)
        except RedisUnavailable as e:
            raise StoreUnavailable(f"budget store unavailable: {e.message}") from e
        reply: dict[str, Any] = json.loads(raw)
        return reply

    def _plan(self, counters: tuple[Counter, ...], tenant: str, agent_id: str, run_id: str,
              unit: str) -> tuple[tuple[Counter, ...], Packed]:
        request = request_key(tenant, agent_id, run_id, unit)
        return counters, pack_args((self._margin_ms, request, _json(request), len(counters),
                                    *reserve_args(counters)))

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
        # The same callers reserve again and again: their arguments are kept per budget
        # set, and a hit checks only the fields that change per call (plan_reserve
        # validated the rest when the plan was made).
        if budgets is not self._plans_for:
            self._plans.clear()
            self._plans_for = budgets
        key = (unit, tenant, agent_id, run_id)
        plan = self._plans.get(key)
        if plan is not None:
            check_reservation(reservation_id, amount, ttl_seconds)
        else:
            plan = self._plan(plan_reserve(budgets, reservation_id, tenant, agent_id, run_id,
                                           unit, amount, ttl_seconds),
                              tenant, agent_id, run_id, unit)
            if len(self._plans) >= _ARGS_CACHED:
                self._plans.clear()
            self._plans[key] = plan
        reply = await self._run(RESERVE, (reservation_id, amount, ttl_seconds * 1000), plan[1])
        kind = reply["k"]
        if kind == "ok":
            return ReserveResult(reply["g"], reply["r"], _statuses(reply["s"]), reservation_id,
                                 int(reply["e"]) / 1000)
        raise ReservationExists(exists_message(reservation_id, reply.get("st", "")))

    async def commit(self, reservation_id: str, actual: int,
                     tenants: tuple[str, ...] | None = None) -> CommitResult:
        check_commit(reservation_id, actual)
        owners = tenant_prefixes(tenants) if tenants is not None else ()
        reply = _checked(await self._run(COMMIT, (reservation_id, actual, *owners)))
        return CommitResult(reservation_id, _statuses(reply["s"]))

    async def release(self, reservation_id: str,
                      tenants: tuple[str, ...] | None = None) -> ReleaseResult:
        check_release(reservation_id)
        owners = tenant_prefixes(tenants) if tenants is not None else ()
        reply = _checked(await self._run(RELEASE, (reservation_id, *owners)))
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
        arg = json.dumps([
            [c.budget_id, c.unit, c.scope, c.scope_key, c.kind, str(c.limit), c.window,
             c.window_seconds, c.window_spec,
             *counter_key_parts(c.scope, c.window_spec, c.budget_id, c.key)]
            for c in counters
        ], separators=(",", ":"))
        return _statuses((await self._run(GET, (arg,)))["s"])

    async def start(self) -> None:
        """Connect, check the Redis's durability and load the scripts (RedisLayer.start);
        StoreUnavailable when Redis cannot be reached or is refused."""
        try:
            await self._redis.start()
        except RedisUnavailable as e:
            raise StoreUnavailable(f"budget store unavailable: {e.message}") from e

    async def ping(self) -> None:
        """For health (RedisLayer.ping): StoreUnavailable when Redis cannot serve."""
        try:
            await self._redis.ping()
        except RedisUnavailable as e:
            raise StoreUnavailable(f"budget store unavailable: {e.message}") from e

    async def close(self) -> None:
        if self._owns:
            await self._redis.close()


def _json(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _checked(reply: dict[str, Any]) -> dict[str, Any]:
    if reply["k"] == "not_found":
        raise ReservationNotFound(reply["m"])
    if reply["k"] == "precondition":
        raise FailedPrecondition(reply["m"])
    return reply


def _statuses(raw: Any) -> tuple[BudgetStatus, ...]:
    """The scripts' statuses (lib.lua): [id, unit, scope, scope_key, kind, limit, window
    spec, used, reserved, window end ms ("0": none)]."""
    if not raw:  # cjson writes an empty array as {}
        return ()
    return tuple(
        BudgetStatus(bid, unit, scope, key, kind, int(limit), int(used), int(reserved), spec,
                     int(wend) / 1000 if wend != "0" else None)
        for bid, unit, scope, key, kind, limit, spec, used, reserved, wend in raw
    )


def reserve_args(counters: tuple[Counter, ...]) -> tuple[str, ...]:
    """reserve.lua's 10 arguments per budget (see its header): the counter key around its
    window start, the checks, the status's JSON up to its counts, the id as JSON, and the
    counter key's pieces escaped for the record."""
    out: list[str] = []
    for c in counters:
        status = json.dumps([c.budget_id, c.unit, c.scope, c.scope_key, c.kind, str(c.limit),
                             c.window_spec], ensure_ascii=False, separators=(",", ":"))
        head, tail = counter_key_parts(c.scope, c.window_spec, c.budget_id, c.key)
        out += [
            head, tail, c.kind, str(c.limit), c.window, str(c.window_seconds),
            status[:-1] + ",", _json(c.budget_id), _json(head)[1:-1], _json(tail)[1:-1],
        ]
    return tuple(out)
