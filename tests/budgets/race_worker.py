"""One process of the budget race: N concurrent tasks reserving 1 unit each until refused.

Run as `python -m tests.budgets.race_worker MODE TARGET NAME START_AT TASKS`, where MODE is
`store` (TARGET a Redis URL, the Redis store used directly) or `grpc` (TARGET a server
address). Every task re-sends each granted reservation once (a client retrying after a lost
answer) and stops at its first refusal; a call that gets no answer (timeout, UNAVAILABLE) is
retried with the same id, as a real client would. Prints the granted reservation ids as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

RETRIES = 20


async def _store_side(url: str, name: str, start_at: float, tasks: int) -> list[str]:
    from server.budgets.redis_store import RedisBudgetStore
    from server.budgets.store import StoreUnavailable
    from tests.budgets.conftest import budget

    budgets = (budget("race", "calls", 500),)
    store = RedisBudgetStore.from_url(url, fleet=name.split("/")[0])

    async def reserve(rid: str) -> Any:
        for _ in range(RETRIES):  # a timeout may hide a granted answer: retry the same id
            try:
                return await store.reserve(budgets, rid, "", "", "", "calls", 1, 300)
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"no answer for {rid} after {RETRIES} attempts")

    async def one(i: int) -> list[str]:
        mine = []
        n = 0
        while True:
            rid = f"{name}-{i}-{n}"
            n += 1
            r = await reserve(rid)
            if not r.granted:
                return mine
            again = await reserve(rid)
            assert again.granted
            mine.append(rid)

    await store.start()
    await asyncio.sleep(max(0.0, start_at - time.time()))
    try:
        return [rid for part in await asyncio.gather(*(one(i) for i in range(tasks)))
                for rid in part]
    finally:
        await store.close()


async def _grpc_side(address: str, name: str, start_at: float, tasks: int) -> list[str]:
    import grpc
    from proctor.v1 import budgets_pb2, budgets_pb2_grpc

    async with grpc.aio.insecure_channel(address) as ch:
        stub = budgets_pb2_grpc.BudgetsStub(ch)

        async def reserve(req: Any) -> Any:
            for _ in range(RETRIES):  # UNAVAILABLE may hide a granted answer: retry the same id
                try:
                    return await stub.ReserveBudget(req, timeout=10)
                except grpc.aio.AioRpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                        grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
                    await asyncio.sleep(0.05)
            raise RuntimeError(f"no answer for {req.reservation_id} after {RETRIES} attempts")

        async def one(i: int) -> list[str]:
            mine = []
            n = 0
            while True:
                rid = f"{name}-{i}-{n}"
                n += 1
                req = budgets_pb2.ReserveBudgetRequest(
                    reservation_id=rid, unit="calls", amount=1, ttl_seconds=300)
                r = await reserve(req)
                if not r.granted:
                    return mine
                again = await reserve(req)
                assert again.granted
                mine.append(rid)

        await ch.channel_ready()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return [rid for part in await asyncio.gather(*(one(i) for i in range(tasks)))
                for rid in part]


def main(argv: list[str]) -> int:
    mode, target, name, start_at, tasks = argv
    side = _store_side if mode == "store" else _grpc_side
    granted = asyncio.run(side(target, name, float(start_at), int(tasks)))
    print(json.dumps(granted))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
