"""Bulk work takes turns (Turns.pause): whatever the number of slicers (batches in
progress, the audit writer), no two of their slices run in one turn of the event loop,
each is followed by a turn without bulk work, every slicer gets its turns, and one
cancelled while it waits neither runs nor holds the others up.

A ticker task counts the loop's turns (it wakes once per turn); each batch notes the turn
in which each of its slices runs.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.turns import Turns


async def _run(slices_per_batch: list[int], cancel: set[int]) -> tuple[dict[int, list[int]],
                                                                       set[int]]:
    turns = Turns()
    turn = 0
    stop = False

    async def ticker() -> None:
        nonlocal turn
        while not stop:
            turn += 1
            await asyncio.sleep(0)

    ran: dict[int, list[int]] = {i: [] for i in range(len(slices_per_batch))}
    finished: set[int] = set()

    async def batch(i: int, n: int) -> None:
        for _ in range(n):
            await turns.pause()
            ran[i].append(turn)
        finished.add(i)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(batch(i, n)) for i, n in enumerate(slices_per_batch)]
    await asyncio.sleep(0)
    for i in cancel:
        tasks[i].cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    stop = True
    await tick
    return ran, finished


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6), st.data())
def test_slices_take_turns_with_a_free_turn_between(
        slices: list[int], data: st.DataObject) -> None:
    cancel = data.draw(st.sets(st.integers(0, len(slices) - 1), max_size=len(slices) - 1))
    ran, finished = asyncio.run(_run(slices, cancel))
    assert finished == set(range(len(slices))) - cancel  # nobody is left waiting
    turns = sorted(t for i, ts in ran.items() for t in ts)
    assert all(b - a >= 2 for a, b in zip(turns, turns[1:], strict=False)), turns
    for i in finished:
        assert len(ran[i]) == slices[i]
    for i in cancel:
        assert ran[i] == []  # cancelled before its first turn came


def test_a_lone_batch_keeps_going() -> None:
    ran, finished = asyncio.run(_run([50], set()))
    assert finished == {0} and len(ran[0]) == 50
