"""Does the Redis keep what budgets and approvals write? Checked at start and whenever the
Redis restarts (its run id changes); a restart that lost Proctor's data is logged and
counted.

Budgets and approvals are promises (a granted reservation is held, a retried id is not
reserved twice, an approved grant is used once); a Redis that forgets them on a restart
breaks those promises silently. So, on every node (every primary of a Cluster):

- `appendonly yes` (AOF) passes;
- RDB snapshots only (`save` set, AOF off) is refused unless `--redis-allow-rdb`: a
  crash loses everything written since the last snapshot;
- no persistence at all (`appendonly no`, `save ""`), or a `maxmemory` with an
  eviction policy other than `noeviction` (Redis may then drop budget and approval
  keys), is refused unless `--redis-allow-volatile`.

A refused Redis stops the server at start (with a message that says what to set). Found
later (after a restart with other settings), every budget and approval call answers
UNAVAILABLE with that message until a later check passes: fail closed.

Loss is seen through a marker key per store (lua/watch/marker.lua) in the store's
hash tag, so on a Cluster the check runs where that store's data lives.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import metrics
from .errors import VolatileRedis
from .scripts import Script, ScriptRunner

log = logging.getLogger("proctor.redis")
MARKER = Script.load("watch", "marker")


@dataclass(frozen=True, slots=True)
class Durability:
    """What the operator allows beyond AOF (the flags of `proctor serve`)."""

    allow_rdb: bool = False  # --redis-allow-rdb
    allow_volatile: bool = False  # --redis-allow-volatile


def info_fields(reply: Any) -> dict[str, str]:
    """INFO's answer as {field: value}: redis-py parses it already, RESP gives the text."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    out = {}
    for line in str(reply).splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[name.strip()] = value.strip()
    return out


def config_value(reply: Any, name: str) -> str:
    """CONFIG GET's answer ([name, value] from RESP, {name: value} from redis-py)."""
    if isinstance(reply, dict):
        return str(reply.get(name, ""))
    pairs = list(reply or ())
    return str(dict(zip(pairs[::2], pairs[1::2], strict=True)).get(name, ""))


def node_problem(node: str, persistence: dict[str, str], memory: dict[str, str], save: Any,
                 allowed: Durability) -> str:
    """Why `node` is refused ("" when it is not), from its INFO persistence and memory and
    its CONFIG GET save (an exception when CONFIG could not be read)."""
    if allowed.allow_volatile:
        return ""
    policy = memory.get("maxmemory_policy", "noeviction")
    if int(memory.get("maxmemory", "0") or 0) > 0 and policy != "noeviction":
        return (f"Redis {node} may evict keys (maxmemory-policy {policy} with maxmemory set), "
                "and would drop budget and approval records: set `maxmemory-policy "
                "noeviction`, or pass --redis-allow-volatile to accept losing them")
    if persistence.get("aof_enabled") == "1":
        return ""
    if isinstance(save, Exception):
        if allowed.allow_rdb:
            return ""
        return (f"Redis {node} has no append-only file (appendonly no) and its `save` setting "
                f"cannot be read ({save}): set `appendonly yes` (appendfsync everysec or "
                "always); if RDB snapshots are on and a crash may lose what was written "
                "since the last one, pass --redis-allow-rdb; --redis-allow-volatile accepts "
                "no persistence at all")
    if save:
        if allowed.allow_rdb:
            return ""
        return (f"Redis {node} keeps RDB snapshots only (appendonly no, save {save!r}): a "
                "crash loses every reservation and approval since the last snapshot. Set "
                "`appendonly yes` (appendfsync everysec or always), or pass "
                "--redis-allow-rdb to accept that")
    return (f"Redis {node} has no persistence (appendonly no, save ''): a restart forgets "
            "every reservation and approval. Set `appendonly yes` (appendfsync everysec or "
            "always) in redis.conf, or `CONFIG SET appendonly yes` then `CONFIG REWRITE`; "
            "or pass --redis-allow-volatile to accept losing them")


@dataclass
class DurabilityWatch:
    """Checks the Redis behind `runner` (module docstring). `check()` runs at start and on
    every health probe; it raises VolatileRedis while the Redis is refused."""

    runner: ScriptRunner
    allowed: Durability = field(default_factory=Durability)
    markers: list[str] = field(default_factory=list)
    refusal: str = ""
    _run_ids: dict[str, str] = field(default_factory=dict)
    _checked: bool = False

    def __post_init__(self) -> None:
        self.runner.register([MARKER])

    def watch(self, prefix: str) -> None:
        """Watch the data under `prefix` (a store's keys, one hash tag)."""
        key = prefix + "marker"
        if key not in self.markers:
            self.markers.append(key)

    async def check(self) -> None:
        """Look for a restart (and a loss) under every watched prefix; on the first look and
        after a restart, check the settings. RedisUnavailable when Redis does not answer;
        VolatileRedis while it is refused."""
        restarted = not self._checked  # the first look checks the settings
        for key in self.markers:
            reply = await self.runner.call(MARKER, (key,))
            run_id, marked_under, written = str(reply).split(",")
            before = self._run_ids.get(key)
            self._run_ids[key] = run_id
            if before is None:
                if written == "1":
                    log.info("redis: no marker under %s yet (a new Redis, or one that lost "
                             "Proctor's data while no Proctor was connected); wrote it",
                             key)
                restarted = True
            elif before != run_id:
                restarted = True
                metrics.RESTARTS.inc()
                lost = written == "1" or marked_under == run_id
                if lost:
                    metrics.DATA_LOST.inc()
                    log.error("redis restarted (run id %s -> %s) and LOST Proctor's data "
                              "under %s: reservations and approvals it held are forgotten "
                              "(see docs/redis.md for the settings that keep them)",
                              before, run_id, key.removesuffix("marker"))
                else:
                    log.warning("redis restarted (run id %s -> %s); data under %s kept",
                                before, run_id, key.removesuffix("marker"))
        if restarted:
            await self._check_settings()
            self._checked = True
        if self.refusal:
            raise VolatileRedis(self.refusal)

    async def _check_settings(self) -> None:
        persistence = await self.runner.each_node("INFO", "persistence")
        memory = await self.runner.each_node("INFO", "memory")
        saves = await self.runner.each_node("CONFIG", "GET", "save")
        problems = []
        for node in sorted(persistence):
            save = saves.get(node)
            setting = save if isinstance(save, Exception) else config_value(save, "save")
            problem = node_problem(node, info_fields(persistence[node]),
                                   info_fields(memory.get(node, "")), setting, self.allowed)
            if problem:
                problems.append(problem)
        refusal = "; ".join(problems)
        if refusal and refusal != self.refusal:
            log.error("redis refused: %s", refusal)
        elif self.refusal and not refusal:
            log.info("redis durability check passes again")
        self.refusal = refusal
        self.runner.refusal = refusal
        metrics.REFUSED.set(1 if refusal else 0)
