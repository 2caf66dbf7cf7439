"""One process of the budget race: N concurrent tasks reserving 1 unit each until refused.

Run as `python -m tests.budgets.race_worker MODE TARGET NAME START_AT TASKS`, where MODE is
`store` (TARGET a Redis URL, the Redis store used directly, limit 500) or `grpc` (TARGET a
server address; the limit is the server's policy). Every task re-sends each granted
reservation once (a client retrying after a lost answer) and stops at its first refusal; a
call that gets no answer (timeout, UNAVAILABLE) is retried with the same id for up to
RETRY_SECONDS, as a real client would. Prints {"granted": [ids], "retries": n} as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

RETRY_SECONDS = 15.0


class Retrier:
    """Retry one call with the same reservation id until it answers (or time runs out)."""

    def __init__(self, transient: Callable[[BaseException], bool]) -> None:
        self.transient = transient
        self.retries = 0

    async def __call__(self, call: Callable[[], Awaitable[Any]], rid: str) -> Any:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                return await call()
            except Exception as e:
                if not self.transient(e) or time.monotonic() > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(0.05)


async def _until_refused(reserve: Callable[[str], Awaitable[Any]], name: str,
                         tasks: int) -> list[str]:
    async def one(i: int) -> list[str]:
        mine = []
        n = 0
        while True:
            rid = f"{name}-{i}-{n}"
            n += 1
            if not (await reserve(rid)).granted:
                return mine
            assert (await reserve(rid)).granted  # the same id again: the first answer
            mine.append(rid)

    parts = await asyncio.gather(*(one(i) for i in range(tasks)))
    return [rid for part in parts for rid in part]


async def _store_side(url: str, name: str, start_at: float, tasks: int) -> tuple[list[str], int]:
    from proctor.server.budgets.redis_store import RedisBudgetStore
    from proctor.server.budgets.store import StoreUnavailable
    from tests.budgets.conftest import budget

    budgets = (budget("race", "calls", 500),)
    store = RedisBudgetStore.from_url(url, fleet=name.split("/")[0])
    retry = Retrier(lambda e: isinstance(e, StoreUnavailable))

    async def reserve(rid: str) -> Any:
        return await retry(
            lambda: store.reserve(budgets, rid, "", "", "", "calls", 1, 300), rid)

    await store.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    try:
        return await _until_refused(reserve, name, tasks), retry.retries
    finally:
        await store.close()


async def _grpc_side(address: str, name: str, start_at: float, tasks: int) -> tuple[list[str], int]:
    import grpc

    from proctor.v1 import budgets_pb2, budgets_pb2_grpc

    def transient(e: BaseException) -> bool:
        return isinstance(e, grpc.aio.AioRpcError) and e.code() in (
            grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    retry = Retrier(transient)
    async with grpc.aio.insecure_channel(address) as ch:
        stub = budgets_pb2_grpc.BudgetsStub(ch)

        async def reserve(rid: str) -> Any:
            req = budgets_pb2.ReserveBudgetRequest(
                reservation_id=rid, unit="calls", amount=1, ttl_seconds=300)
            return await retry(lambda: stub.ReserveBudget(req, timeout=10), rid)

        await ch.channel_ready()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await _until_refused(reserve, name, tasks), retry.retries


def main(argv: list[str]) -> int:
    mode, target, name, start_at, tasks = argv
    side = _store_side if mode == "store" else _grpc_side
    granted, retries = asyncio.run(side(target, name, float(start_at), int(tasks)))
    print(json.dumps({"granted": granted, "retries": retries}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
