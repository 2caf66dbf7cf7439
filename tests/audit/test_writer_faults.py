"""The writer against a sink that cannot write: events kept and retried, a refusal and
health while it fails, shed as a gap, and a close that is bounded whatever the sink does."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from proctor.server.audit.log import AuditClosed, AuditUnavailable
from proctor.server.audit.verify import verify
from proctor.server.audit.writer import AuditWriter
from tests.audit.helpers import MemorySink, decision, run


async def _until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _verified(sink: MemorySink) -> list[dict]:
    assert verify(((f"mem:{i}", ln, False) for i, ln in enumerate(sink.lines, 1))).ok
    return [json.loads(x) for x in sink.lines]


def test_a_failing_sink_keeps_the_events_refuses_new_ones_and_recovers() -> None:
    health: list[bool] = []

    async def go() -> MemorySink:
        sink = MemorySink()
        p = AuditWriter(sink, writer="f", linger=0.0, on_health=health.append)
        for i in range(5):
            await p.record("decision", decision(i))
        await p.flush()
        sink.failing = OSError(28, "No space left on device")
        for i in range(5, 10):  # answered before the failure was seen: kept
            await p.record("decision", decision(i))
        await _until(lambda: bool(p.refusal))
        assert "No space left on device" in p.refusal and health == [False]
        sink.failing = None
        await p.flush()
        assert p.refusal == "" and health == [False, True]
        await p.close()
        return sink

    evs = _verified(run(go))
    assert [e["decision_id"] for e in evs] == [f"d-{i}" for i in range(10)]


def test_under_block_a_full_queue_of_a_failing_sink_is_refused_not_waited_on() -> None:
    async def go() -> None:
        sink = MemorySink()
        sink.failing = OSError(5, "Input/output error")
        p = AuditWriter(sink, writer="b", queue_size=4, linger=0.0)
        for i in range(4):
            await p.record("decision", decision(i))
        await _until(lambda: bool(p.refusal))
        with pytest.raises(AuditUnavailable, match="Input/output error"):
            await asyncio.wait_for(p.record("decision", decision(4)), 5)
        sink.failing = None
        await p.close()
        assert len(sink.lines) == 4

    run(go)


def test_under_shed_a_failing_sink_answers_and_records_the_gap() -> None:
    async def go() -> tuple[AuditWriter, MemorySink]:
        sink = MemorySink()
        sink.failing = OSError(28, "No space left on device")
        p = AuditWriter(sink, writer="s", queue_size=8, full_policy="shed", linger=0.0)
        for i in range(50):
            await asyncio.wait_for(p.record("decision", decision(i)), 5)
        assert p.refusal == ""  # shed answers; the hole is recorded instead
        sink.failing = None
        await p.close()
        return p, sink

    p, sink = run(go)
    evs = _verified(sink)
    gaps = [e for e in evs if e["kind"] == "gap"]
    kept = [e for e in evs if e["kind"] == "decision"]
    assert len(gaps) == 1 and gaps[0]["count"] == p.stats["shed"]
    assert "No space left on device" in gaps[0]["reason"]
    assert len(kept) + p.stats["shed"] == 50


def test_close_is_bounded_when_the_sink_never_recovers() -> None:
    async def go() -> None:
        sink = MemorySink()
        sink.failing = OSError(28, "No space left on device")
        p = AuditWriter(sink, writer="c", durability="sync")
        waiting = asyncio.ensure_future(p.record("decision", decision(0)))
        await _until(lambda: bool(p.refusal))
        t0 = time.monotonic()
        await p.close(timeout=0.3)
        assert time.monotonic() - t0 < 3
        with pytest.raises(AuditClosed):
            await asyncio.wait_for(waiting, 1)
        assert sink.lines == []

    run(go)


def test_a_stalled_sink_does_not_hold_close_past_its_timeout() -> None:
    async def go() -> None:
        sink = MemorySink()
        sink.gate.clear()  # every write hangs
        p = AuditWriter(sink, writer="h", linger=0.0)
        await p.record("decision", decision(0))
        await asyncio.wait_for(sink.entered.wait(), 5)
        t0 = time.monotonic()
        await p.close(timeout=0.3)
        assert time.monotonic() - t0 < 3

    run(go)
