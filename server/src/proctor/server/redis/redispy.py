"""RedisPyDriver: redis-py's asyncio client as a `Driver` (driver.py), for TLS (`rediss://`)
and Redis Cluster, where its connection handling (certificates, slot maps, MOVED and ASK
redirections, node discovery) is worth more than the lean client's speed.

Connect and socket timeouts are the call bound, and redis-py retries nothing
(Retry(NoBackoff(), 0)); each call is bounded by its deadline as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .driver import Packed
from .url import RedisUrl


class RedisPyDriver:
    """A Driver on redis.asyncio.Redis (one node) or redis.asyncio.RedisCluster."""

    def __init__(self, target: RedisUrl, timeout: float = 1.0) -> None:
        opts: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": True,
        }
        self.cluster = target.cluster
        self.client: Any
        if target.cluster:
            self.client = RedisCluster.from_url(target.url, **opts)
            self.name = "redis-py-cluster"
        else:
            self.client = aioredis.Redis.from_url(target.url, **opts)
            self.name = "redis-py"

    async def execute(self, args: tuple[Any, ...], deadline: float,
                      key: str | None = None) -> Any:
        async with asyncio.timeout_at(deadline):
            if self.cluster and key is not None:
                node = self.client.get_node_from_key(key)
                return await self.client.execute_command(*args, target_nodes=node)
            return await self.client.execute_command(*args)

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any], tail: Packed,
                      deadline: float) -> Any:
        async with asyncio.timeout_at(deadline):
            return await self.client.evalsha(sha, len(keys), *keys, *args, *tail.values)

    async def eval(self, text: str, keys: Sequence[str], args: Sequence[Any], tail: Packed,
                   deadline: float) -> Any:
        async with asyncio.timeout_at(deadline):
            return await self.client.eval(text, len(keys), *keys, *args, *tail.values)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], key: str | None,
                       deadline: float) -> list[Any]:
        if not commands:
            return []
        async with asyncio.timeout_at(deadline):
            pipe = self.client.pipeline(transaction=False)
            for c in commands:
                pipe.execute_command(*c)
            # a failed connection raises here; error replies stay in their slots
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def each_node(self, args: tuple[Any, ...], deadline: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with asyncio.timeout_at(deadline):
            if not self.cluster:
                kw = self.client.connection_pool.connection_kwargs
                where = kw.get("path") or f"{kw.get('host')}:{kw.get('port')}"
                try:
                    out[where] = await self.client.execute_command(*args)
                except rx.ResponseError as e:
                    out[where] = e
                return out
            if not self.client.get_primaries():
                await self.client.initialize()
            for node in self.client.get_primaries():
                try:
                    out[node.name] = await self.client.execute_command(*args, target_nodes=node)
                except rx.ResponseError as e:
                    out[node.name] = e
        return out

    async def close(self) -> None:
        await self.client.aclose()
