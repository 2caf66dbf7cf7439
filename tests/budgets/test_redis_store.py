"""What only the Redis budget store has: its keys' expiries, and the same answers over
either driver of the Redis layer (the lean RespClient and redis-py)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis

from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.redis import RedisLayer, RedisPyDriver, RespClient, parse_redis_url

from .conftest import budget

TOKENS = (budget("fleet-tokens", "tokens", 100),)


def test_the_store_answers_alike_on_either_driver(redis_proc: Any) -> None:
    async def main() -> None:
        answers = []
        for driver in (RespClient(redis_proc.url), RedisPyDriver(parse_redis_url(redis_proc.url))):
            store = RedisBudgetStore(RedisLayer(driver), f"py-{driver.name}", owns=True)
            try:
                await store.start()
                r = await store.reserve(TOKENS, "a", "", "", "", "tokens", 5, 60)
                assert r.granted and r.budgets[0].reserved == 5
                assert (await store.reserve(TOKENS, "a", "", "", "", "tokens", 5, 60)) == r
                c = await store.commit("a", 4)
                answers.append((r.granted, r.budgets[0].reserved, c.budgets[0].used))
            finally:
                await store.close()
        assert answers[0] == answers[1] == (True, 5, 4)

    asyncio.run(main())


def test_window_counters_expire_after_their_window_and_others_never(redis_proc: Any) -> None:
    budgets = (budget("day-tokens", "tokens", 100, window="day"),
               budget("min-tokens", "tokens", 100, window="1m", scope="tenant"),
               budget("slots", "agents", 5, kind="concurrency", scope="agent"))

    async def main() -> None:
        store = RedisBudgetStore.from_url(redis_proc.url, "ttl")
        try:
            for rid in ("a", "b"):  # b finds the counters there already
                r = await store.reserve(budgets, rid, "acme", "x", "", "tokens", 1, 60)
                assert r.granted
            await store.reserve(budgets, "lease", "acme", "x", "", "agents", 1, 60)
            await store.commit("a", 3)
        finally:
            await store.close()

    asyncio.run(main())
    plain = redis.Redis(port=redis_proc.port, decode_responses=True)
    try:
        spans = {"day-tokens": 86_400_000, "min-tokens": 60_000}
        seen = set()
        for key in plain.scan_iter(match="proctor:{ttl}:c:*"):
            bid = next(b.id for b in budgets if f":{b.id}:" in key)
            seen.add(bid)
            if bid == "slots":
                assert plain.pttl(key) == -1
            else:  # P c:SCOPE:SPEC:WINDOW_START_MS:... expires at window end + 1 s
                start = int(key.split(":")[5])
                assert plain.pexpiretime(key) == start + spans[bid] + 1000, key
        assert seen == {"day-tokens", "min-tokens", "slots"}
    finally:
        plain.close()
