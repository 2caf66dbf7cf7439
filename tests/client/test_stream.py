"""Decisions.EvaluateStream: the server's stream and both clients' `stream=True`, live."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proctor.client import (
    FAIL_CLOSED_RULE_ID,
    AsyncProctorClient,
    InvalidRequestError,
    ProctorClient,
    RetryPolicy,
)
from proctor.server.audit.file_sink import list_segments
from proctor.server.audit.verify import verify_dir
from proctor.v1 import decisions_pb2
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

SENDERS = 32
PER_SENDER = 40
# Bounded by the 15 s deadline, not a count: a restart under load takes seconds.
PATIENT = RetryPolicy(attempts=10_000, initial_backoff=0.02, max_backoff=0.2)


def _policy(path: Path) -> Path:
    """One rule per sender, so an answer names whose request it decides."""
    rules = "\n".join(
        f"  - id: s{i}\n    match: {{topics: [\"job.{i}.act.*\"]}}\n"
        f"    decision: {'allow' if i % 2 else 'deny'}\n    reason: sender {i}"
        for i in range(SENDERS)
    )
    path.write_text(f"version: v1\nrules:\n{rules}\n")
    return path


@pytest.fixture(scope="module")
def senders_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    work = tmp_path_factory.mktemp("stream")
    s = start_proctor(_policy(work / "senders.yaml"), work)
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


def _expect(i: int) -> tuple[str, str]:
    return ("allow" if i % 2 else "deny"), f"s{i}"


def _audit_decisions(audit: Path) -> list[dict]:
    out = []
    for files in list_segments(audit).values():
        for f in files:
            out += [e for e in map(json.loads, f.read_bytes().splitlines())
                    if e.get("kind") == "decision"]
    return out


def test_sync_stream_answers_each_of_32_threads_in_order(senders_server: ProctorProcess) -> None:
    wrong: list[str] = []
    ids: list[str] = []
    with ProctorClient(senders_server.address, stream=True, timeout=10) as c:
        def send(i: int) -> None:
            for j in range(PER_SENDER):
                d = c.evaluate(f"job.{i}.act.n{j}", delegation_path=["p"], request_id=f"{i}-{j}")
                if (d.decision, d.rule_id) != _expect(i):
                    wrong.append(f"sender {i}: {d}")
                ids.append(d.decision_id)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not wrong
    assert len(set(ids)) == SENDERS * PER_SENDER


def test_async_stream_answers_each_of_32_tasks_in_order(senders_server: ProctorProcess) -> None:
    async def main() -> list[str]:
        wrong: list[str] = []
        async with AsyncProctorClient(senders_server.address, stream=True, timeout=10) as c:
            async def send(i: int) -> None:
                for j in range(PER_SENDER):
                    d = await c.evaluate(f"job.{i}.act.n{j}", delegation_path=["p"])
                    if (d.decision, d.rule_id) != _expect(i):
                        wrong.append(f"sender {i}: {d}")

            await asyncio.gather(*(send(i) for i in range(SENDERS)))
        return wrong

    assert asyncio.run(main()) == []


def test_a_bad_item_gets_its_error_in_its_slot_and_the_stream_goes_on(
    senders_server: ProctorProcess,
) -> None:
    good = decisions_pb2.EvaluateRequest(topic="job.1.act.x", delegation_path=["p"])
    no_path = decisions_pb2.EvaluateRequest(topic="job.1.act.x")
    items = [good.SerializeToString(), no_path.SerializeToString(), b"\xff\xff\xff",
             good.SerializeToString()]
    with grpc.insecure_channel(senders_server.address) as ch:
        raw = ch.stream_stream("/proctor.v1.Decisions/EvaluateStream")
        answers = [decisions_pb2.EvaluateBatchItem.FromString(b)
                   for b in raw(iter(items), timeout=10)]
    assert [a.WhichOneof("result") for a in answers] == ["response", "error", "error", "response"]
    assert answers[0].response.rule_id == answers[3].response.rule_id == "s1"
    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert answers[1].error.code == answers[2].error.code == invalid
    assert "delegation_path" in answers[1].error.message
    assert "not an EvaluateRequest" in answers[2].error.message


def test_the_client_raises_invalid_argument_and_keeps_streaming(
    senders_server: ProctorProcess,
) -> None:
    with ProctorClient(senders_server.address, stream=True, fail_closed=True) as c:
        with pytest.raises(InvalidRequestError, match="delegation_path"):
            c.evaluate("job.3.act.x")
        assert c.evaluate("job.3.act.x", delegation_path=["p"]).rule_id == "s3"


def test_stream_decisions_are_audited_like_evaluate(tmp_path: Path) -> None:
    server = start_proctor(_policy(tmp_path / "p.yaml"), tmp_path)
    try:
        with ProctorClient(server.address, stream=True, timeout=10) as c:
            ids = {c.evaluate(f"job.{i}.act.y", delegation_path=["p"], request_id=f"r{i}",
                              tenant="acme").decision_id: f"r{i}" for i in range(50)}
    finally:
        assert server.stop() == 0, server.log()
    events = _audit_decisions(tmp_path / "audit")
    assert {e["decision_id"]: e["request_id"] for e in events} == ids
    assert verify_dir(tmp_path / "audit").ok


def test_fail_closed_when_the_stream_gets_no_answer(black_hole: str) -> None:
    with ProctorClient(black_hole, stream=True, timeout=0.3, fail_closed=True) as c:
        d = c.evaluate("job.1.act.x", delegation_path=["p"])
    assert d.decision == "deny" and d.rule_id == FAIL_CLOSED_RULE_ID and d.fail_closed

    async def main() -> None:
        async with AsyncProctorClient(black_hole, stream=True, timeout=0.3,
                                      fail_closed=True) as c:
            d = await c.evaluate("job.1.act.x", delegation_path=["p"])
            assert d.rule_id == FAIL_CLOSED_RULE_ID and "DEADLINE_EXCEEDED" in d.reason

    asyncio.run(main())


def _restart_under_load(server: ProctorProcess, senders: list[threading.Thread],
                        answered: list[int], failed: list[BaseException]) -> None:
    for t in senders:
        t.start()
    _wait(lambda: len(answered) >= 100 or bool(failed))
    server.stop()
    server.start()
    before = len(answered)
    _wait(lambda: len(answered) >= before + 100 or bool(failed))


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    # Generous: a call caught on the old stream may wait out its 15 s deadline before it is
    # retried, and a restart on a loaded 2-core machine has taken several seconds more.
    wait_until(condition, "the stream's answers", timeout, interval=0.01)


def test_sync_client_recovers_when_the_server_restarts_mid_stream(tmp_path: Path) -> None:
    server = start_proctor(_policy(tmp_path / "p.yaml"), tmp_path)
    answered: list[int] = []
    wrong: list[str] = []
    failed: list[BaseException] = []
    stop = threading.Event()
    try:
        with ProctorClient(server.address, stream=True, timeout=15, retry=PATIENT) as c:
            def send(i: int) -> None:
                while not stop.is_set():
                    try:
                        d = c.evaluate(f"job.{i}.act.z", delegation_path=["p"])
                    except Exception as e:  # reported below: no call may fail
                        failed.append(e)
                        return
                    if (d.decision, d.rule_id) != _expect(i):
                        wrong.append(str(d))
                    answered.append(i)

            senders = [threading.Thread(target=send, args=(i,)) for i in range(8)]
            try:
                _restart_under_load(server, senders, answered, failed)
            finally:
                stop.set()
                for t in senders:
                    t.join()
    finally:
        server.stop()
    assert not wrong and not failed, (wrong[:3], failed[:3])


def test_async_client_recovers_when_the_server_restarts_mid_stream(tmp_path: Path) -> None:
    server = start_proctor(_policy(tmp_path / "p.yaml"), tmp_path)

    async def main() -> int:
        async with AsyncProctorClient(server.address, stream=True, timeout=15,
                                      retry=PATIENT) as c:
            assert (await c.evaluate("job.2.act.z", delegation_path=["p"])).rule_id == "s2"
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            results = await asyncio.gather(*(
                c.evaluate(f"job.{i}.act.z", delegation_path=["p"]) for i in range(SENDERS)))
            return sum((d.decision, d.rule_id) == _expect(i) for i, d in enumerate(results))

    try:
        assert asyncio.run(main()) == SENDERS
    finally:
        server.stop()
