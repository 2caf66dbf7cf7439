"""proctor.client.delegation: the path evaluate() uses when the caller names none, nested,
across asyncio tasks and threads. Each path is observed where the server recorded it: the
approval a require_approval decision creates holds the request's delegation path."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from proctor.client import (
    AsyncProctorClient,
    ContextThreadPoolExecutor,
    EvaluationRequest,
    InvalidRequestError,
    ProctorClient,
    carry_context,
    delegation,
    delegation_path,
)
from tests.support.proctor import ProctorProcess


def recorded_path(client: ProctorClient, **kwargs: object) -> tuple[str, ...]:
    """Evaluate a require_approval action with no path given; the path the server saw."""
    d = client.evaluate("tool.send_email", request_id=uuid.uuid4().hex, **kwargs)  # type: ignore[arg-type]
    assert d.decision == "require_approval" and d.approval_id, d
    return client.get_approval(d.approval_id).delegation_path


def test_nesting_builds_the_chain_and_unwinds(client: ProctorClient) -> None:
    assert delegation_path() == ()
    with delegation("A"):
        assert recorded_path(client) == ("A",)
        with delegation("B"), delegation("C"):
            assert delegation_path() == ("A", "B", "C")
            assert recorded_path(client) == ("A", "B", "C")
        assert recorded_path(client) == ("A",)
    assert delegation_path() == ()


def test_an_explicit_path_wins_over_the_context(client: ProctorClient) -> None:
    with delegation("A"):
        assert recorded_path(client, delegation_path=["X", "Y"]) == ("X", "Y")


def test_the_path_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), delegation("A"), delegation("B"):
        raise RuntimeError("boom")
    assert delegation_path() == ()


def test_decorator_on_functions_and_coroutines(client: ProctorClient) -> None:
    @delegation("worker")
    def work() -> tuple[str, ...]:
        return recorded_path(client)

    @delegation("async-worker")
    async def awork() -> tuple[str, ...]:
        await asyncio.sleep(0)
        return delegation_path()

    with delegation("boss"):
        assert work() == ("boss", "worker")
        assert asyncio.run(awork()) == ("boss", "async-worker")
    assert work() == ("worker",)


def test_bad_agent_ids_and_too_deep_paths_fail_at_the_push() -> None:
    for bad in ("", "x" * 129, 7):
        with pytest.raises(ValueError, match="agent id"):
            delegation(bad)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        for i in range(32):
            stack.enter_context(delegation(f"a{i}"))
        with pytest.raises(ValueError, match="at most 32"):
            stack.enter_context(delegation("one-too-many"))
        assert len(delegation_path()) == 32
    assert delegation_path() == ()


def test_asyncio_tasks_each_carry_their_own_path(server: ProctorProcess) -> None:
    async def branch(client: AsyncProctorClient, agent: str) -> tuple[str, ...]:
        with delegation(agent):
            await asyncio.sleep(0)  # let the sibling push its own agent meanwhile
            d = await client.evaluate("tool.send_email", request_id=uuid.uuid4().hex)
            return (await client.get_approval(d.approval_id)).delegation_path

    async def main() -> None:
        async with AsyncProctorClient(server.address, timeout=10) as client:
            with delegation("root"):
                paths = await asyncio.gather(*(branch(client, f"sub-{i}") for i in range(8)))
                assert paths == [("root", f"sub-{i}") for i in range(8)]
                assert delegation_path() == ("root",)
                # a task created inside a block keeps the block's path after it closes
                closed = asyncio.Event()
                with delegation("child"):
                    later = asyncio.create_task(_path_later(closed))
                closed.set()
                assert await later == ("root", "child")
                assert await asyncio.to_thread(delegation_path) == ("root",)

    asyncio.run(main())


async def _path_later(closed: asyncio.Event) -> tuple[str, ...]:
    await closed.wait()  # read only once the block that created this task has closed
    return delegation_path()


def test_plain_threads_start_empty_and_the_helpers_carry_the_path(
    client: ProctorClient,
) -> None:
    with delegation("A"), delegation("B"):
        # Python copies no context into a new thread: no path, and the server refuses a
        # request without one (named in the error), never a silent decision.
        with ThreadPoolExecutor(2) as plain:
            assert plain.submit(delegation_path).result() == ()
            with pytest.raises(InvalidRequestError, match="delegation_path"):
                plain.submit(client.evaluate, "tool.search").result()
        with ContextThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda _: recorded_path(client), range(4)))
            assert paths == [("A", "B")] * 4
            inner = pool.submit(carry_context(_nested_in_thread), client).result()
            assert inner == ("A", "B", "C")
        seen: list[tuple[str, ...]] = []
        t = threading.Thread(target=carry_context(lambda: seen.append(recorded_path(client))))
        t.start()
        t.join()
        assert seen == [("A", "B")]


def _nested_in_thread(client: ProctorClient) -> tuple[str, ...]:
    with delegation("C"):
        return recorded_path(client)


def test_batch_items_without_a_path_get_the_current_one(client: ProctorClient) -> None:
    with delegation("A"), delegation("B"):
        items = client.evaluate_batch([
            EvaluationRequest("tool.send_email", request_id=uuid.uuid4().hex),
            {"topic": "tool.send_email", "request_id": uuid.uuid4().hex},
            EvaluationRequest("tool.send_email", delegation_path=("Z",),
                              request_id=uuid.uuid4().hex),
        ])
    paths = [client.get_approval(i.approval_id).delegation_path for i in items]  # type: ignore[union-attr]
    assert paths == [("A", "B"), ("A", "B"), ("Z",)]
