"""RedisLayer: the one Redis of a process, shared by the budget and approval stores (and,
later, the audit's Redis sink): its connection, its scripts and its durability watch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .driver import Driver
from .durability import Durability, DurabilityWatch
from .redispy import RedisPyDriver
from .resp import RespClient
from .scripts import Script, ScriptRunner
from .url import RedisUrl, parse_redis_url

CALL_TIMEOUT = 1.0  # every call: Redis away is UNAVAILABLE within about a second
START_TIMEOUT = 5.0  # connecting, discovering a cluster and loading the scripts at start


def open_driver(target: RedisUrl, timeout: float = CALL_TIMEOUT) -> Driver:
    """The lean RespClient for one node over redis:// or unix:// (options: db at most);
    redis-py for TLS (rediss://), Cluster, and options only redis-py understands."""
    if not target.cluster and target.scheme in ("redis", "unix") and target.options <= {"db"}:
        return RespClient(target.url)
    return RedisPyDriver(target, timeout)


class RedisLayer:
    """A Driver, the ScriptRunner over it, and the DurabilityWatch of what it holds."""

    def __init__(self, driver: Driver, *, timeout: float = CALL_TIMEOUT,
                 durability: Durability | None = None, where: str = "") -> None:
        self.driver = driver
        self.where = where
        self.runner = ScriptRunner(driver, timeout)
        self.watch = DurabilityWatch(self.runner, durability or Durability())
        self._ping: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = CALL_TIMEOUT,
                 durability: Durability | None = None) -> RedisLayer:
        """ValueError for a URL that is not a Redis URL (url.parse_redis_url)."""
        target = parse_redis_url(url)
        return cls(open_driver(target, timeout), timeout=timeout, durability=durability,
                   where=target.redacted())

    def register(self, scripts: Iterable[Script], prefix: str = "") -> None:
        """A store's scripts (loaded at start and after a restart) and its key prefix (one
        hash tag), whose loss the durability watch looks for."""
        self.runner.register(scripts)
        if prefix:
            self.watch.watch(prefix)

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """Connect, check durability and load the scripts, within `timeout`.
        RedisUnavailable when Redis cannot be reached; VolatileRedis when it is refused."""
        async with asyncio.timeout(timeout):
            await self.runner.ping(timeout)
            await self.watch.check()

    async def ping(self) -> None:
        """For health: PING, re-load scripts when needed, look for a restart (and a loss)
        and re-check the settings after one; RedisUnavailable (VolatileRedis while
        refused) when it cannot serve. Callers arriving during a ping share it."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self._ping_once())
        await asyncio.shield(self._ping)

    async def _ping_once(self) -> None:
        await self.runner.ping()
        await self.watch.check()

    async def close(self) -> None:
        if self._ping is not None and not self._ping.done():
            self._ping.cancel()
        await self.driver.close()
