"""Fair shares between callers (--fair-share-calls, --fair-share-queue; docs/limits.md).

In the development mode every caller is the anonymous principal, so each connection is
a caller of its own. A flood of full batches from one connection, while another
connection keeps calling, is held to its share: past the queue bound its calls answer
RESOURCE_EXHAUSTED naming the flag, and the other caller's calls all complete while
the flood runs. Alone, the same flood is never held.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proctor.v1 import decisions_pb2
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"
EVALUATE = "/proctor.v1.Decisions/Evaluate"
BATCH = "/proctor.v1.Decisions/EvaluateBatch"
PATH = ["orchestrator", "research-agent", "mailer"]
QUIET = decisions_pb2.EvaluateRequest(
    topic="job.42.delegate.internal", delegation_path=PATH, tenant="quiet")
# A full batch (the default --max-batch-items): it weighs a whole share.
FULL_BATCH = decisions_pb2.EvaluateBatchRequest(requests=[
    decisions_pb2.EvaluateRequest(topic="job.42.delegate.internal", delegation_path=PATH,
                                  tenant="flood")] * 1000).SerializeToString()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ProctorProcess]:
    p = start_proctor(SEED_POLICY, tmp_path, "--fair-share-calls", "1",
                      "--fair-share-queue", "2")
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


class QuietCaller:
    """Sequential Evaluate calls on a connection of its own until stopped."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.done = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QuietCaller:
        self._thread.start()
        wait_until(lambda: self.done >= 5, "the quiet caller's first calls")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            call = channel.unary_unary(EVALUATE)
            while not self._stop.is_set():
                try:
                    call(QUIET.SerializeToString(), timeout=30)
                except grpc.RpcError as e:
                    self.failures.append(f"{e.code()}: {e.details()}")
                self.done += 1


async def _batches(address: str, timeouts: list[float]) -> list[tuple[grpc.StatusCode, str]]:
    """Full batches in flight together on one connection: each one's status and details."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(BATCH)

        async def one(timeout: float) -> tuple[grpc.StatusCode, str]:
            try:
                await call(FULL_BATCH, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                return e.code(), e.details() or ""
            return grpc.StatusCode.OK, ""

        return list(await asyncio.gather(*[one(t) for t in timeouts]))


def test_a_flood_is_held_to_its_share_beside_another_caller(server: ProctorProcess) -> None:
    with QuietCaller(server.address) as quiet:
        before = quiet.done
        statuses = asyncio.run(_batches(server.address, [60.0] * 20))
        during = quiet.done - before
    codes = [code for code, _ in statuses]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, statuses
    # One batch in progress and two parked at most: the rest were turned away.
    refused = [details for code, details in statuses
               if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert refused, statuses
    assert all("--fair-share-queue" in details for details in refused), refused
    assert codes.count(grpc.StatusCode.OK) >= 1
    assert during > 0 and not quiet.failures, quiet.failures


def test_one_caller_alone_gets_every_answer(server: ProctorProcess) -> None:
    statuses = asyncio.run(_batches(server.address, [60.0] * 20))
    assert [code for code, _ in statuses] == [grpc.StatusCode.OK] * 20, statuses


def test_parked_calls_keep_their_deadline_and_their_slot_comes_back(tmp_path: Path) -> None:
    wide = start_proctor(SEED_POLICY, tmp_path, "--fair-share-calls", "1",
                         "--fair-share-queue", "100")
    try:
        with QuietCaller(wide.address) as quiet:
            # Five batches with time to spare, then ten that must wait behind them (one
            # batch at a time) past their deadline.
            statuses = asyncio.run(_batches(wide.address, [60.0] * 5 + [0.05] * 10))
            codes = [code for code, _ in statuses]
            assert codes[:5] == [grpc.StatusCode.OK] * 5, statuses
            assert set(codes[5:]) <= {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED}
            assert grpc.StatusCode.DEADLINE_EXCEEDED in codes[5:], statuses
            # The expired calls left no slot taken: the same flood's next batch runs.
            again = asyncio.run(_batches(wide.address, [30.0]))
            assert again == [(grpc.StatusCode.OK, "")], again
            assert not quiet.failures, quiet.failures
        assert "Traceback" not in wide.log(), wide.log()
    finally:
        assert wide.stop() == 0, wide.log()
