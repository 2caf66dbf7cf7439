"""The pipeline with the file sink: chain, rotation, group commit, shed/block, verify, readers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proctor.server.audit import event, pipeline
from proctor.server.audit.file_sink import FileSink, list_segments
from proctor.server.audit.pipeline import SEAL_CHUNK, AuditClosed, AuditPipeline
from proctor.server.audit.reader import DirReader
from proctor.server.audit.verify import verify_dir
from proctor.server.cli import main as cli_main
from tests.audit.helpers import MemorySink, decision, run

ROOT = Path(__file__).resolve().parents[2]


def _lines(root: Path) -> list[dict]:
    out = []
    for files in list_segments(root).values():
        for f in files:
            out += [json.loads(x) for x in f.read_bytes().splitlines()]
    return out


def _write(root: Path, n: int, writer: str = "w1", **kw) -> AuditPipeline:
    async def go() -> AuditPipeline:
        sink = FileSink(root, segment_bytes=kw.pop("segment_bytes", 8192),
                        hmac_key=kw.get("hmac_key"))
        p = AuditPipeline(sink, writer=writer, **kw)
        for i in range(n):
            await p.record("decision", decision(i))
        await p.close()
        return p

    return run(go)


def test_chain_rotation_and_verify(tmp_path: Path) -> None:
    p = _write(tmp_path, 300, hmac_key=b"k")
    segs = list_segments(tmp_path)["w1"]
    assert len(segs) > 3, "small segment_bytes must rotate"
    for s in segs:
        assert s.stat().st_size <= 8192 or s.read_bytes().count(b"\n") == 1
        assert s.read_bytes().endswith(b"\n")
    evs = _lines(tmp_path)
    assert [e["seq"] for e in evs] == list(range(1, 301))
    assert all(e["writer"] == "w1" and e["kind"] == "decision" for e in evs)
    assert evs[0]["prev_hash"] == "" and evs[1]["prev_hash"] == evs[0]["hash"]
    assert len({e["event_id"] for e in evs}) == 300
    rep = verify_dir(tmp_path, b"k")
    assert rep.ok and rep.events == 300, rep.render()
    assert not verify_dir(tmp_path, b"wrong-key").ok
    assert p.stats["written"] == 300


def test_group_commit_one_fsync_per_batch_and_sync_waits_for_it(tmp_path: Path) -> None:
    async def go() -> tuple[FileSink, list[bool]]:
        sink = FileSink(tmp_path)
        p = AuditPipeline(sink, writer="g", durability="sync")
        seen: list[bool] = []

        async def one(i: int) -> None:
            await p.record("decision", decision(i))
            # answered only after its line is in the file and fsynced
            seen.append(f'"decision_id":"d-{i}"'.encode() in sink.path.read_bytes())

        await asyncio.gather(*(one(i) for i in range(500)))
        await p.close()
        return sink, seen

    sink, seen = run(go)
    assert len(seen) == 500 and all(seen)
    assert 1 <= sink.fsyncs <= 20, f"{sink.fsyncs} fsyncs for 500 concurrent sync records"


def test_tampered_line_fails_verify_at_that_line(tmp_path: Path, capsys) -> None:
    _write(tmp_path, 50, segment_bytes=1 << 20)
    seg = list_segments(tmp_path)["w1"][0]
    lines = seg.read_bytes().splitlines(keepends=True)
    lines[19] = lines[19].replace(b'"outcome":"allow"', b'"outcome":"deny"')
    seg.write_bytes(b"".join(lines))
    code = cli_main(["audit", "verify", "--audit-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{seg}:20: writer w1 seq 20: hash mismatch" in out
    assert "BROKEN" in out


def test_rehashed_tampering_breaks_the_next_link_and_hmac(tmp_path: Path, capsys) -> None:
    from proctor.server.audit.event import seal, strip_hashes

    _write(tmp_path, 10, segment_bytes=1 << 20, hmac_key=b"key")
    seg = list_segments(tmp_path)["w1"][0]
    lines = seg.read_bytes().splitlines(keepends=True)
    ev = strip_hashes(json.loads(lines[4]))
    ev["outcome"] = "deny"
    lines[4], _ = seal(ev, b"forged")
    seg.write_bytes(b"".join(lines))
    (tmp_path / "key").write_bytes(b"key\n")
    code = cli_main(["audit", "verify", "--audit-dir", str(tmp_path),
                     "--hmac-key-file", str(tmp_path / "key")])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{seg}:5: writer w1 seq 5: hmac mismatch" in out
    assert f"{seg}:6: writer w1 seq 6: prev_hash does not match" in out


def test_deleted_line_shows_a_gap(tmp_path: Path, capsys) -> None:
    _write(tmp_path, 30, segment_bytes=1 << 20)
    seg = list_segments(tmp_path)["w1"][0]
    lines = seg.read_bytes().splitlines(keepends=True)
    del lines[11]
    seg.write_bytes(b"".join(lines))
    code = cli_main(["audit", "verify", "--audit-dir", str(tmp_path), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 1 and rep["missing"] == 1
    assert any(f"{seg}:12: writer w1: gap, seq 12 missing" in e for e in rep["errors"])


def test_torn_tail_is_reported_and_a_resumed_writer_starts_a_new_segment(tmp_path: Path) -> None:
    _write(tmp_path, 20, segment_bytes=1 << 20)
    seg = list_segments(tmp_path)["w1"][0]
    data = seg.read_bytes()
    seg.write_bytes(data + data.splitlines(keepends=True)[0][:40])  # a write cut by a crash
    rep = verify_dir(tmp_path)
    assert rep.ok and any("torn final line" in w for w in rep.warnings)
    _write(tmp_path, 5, segment_bytes=1 << 20)  # same writer name: continues the chain
    segs = list_segments(tmp_path)["w1"]
    assert len(segs) == 2 and segs[1].name == "w1-000000000021.jsonl"
    rep = verify_dir(tmp_path)
    assert rep.ok and rep.events == 25, rep.render()


def test_events_are_sealed_by_the_call_or_between_calls_never_when_the_batch_is_written(
) -> None:
    # A decision offered while the loop is idle (nothing else pending) and nothing waits
    # before it is sealed by offer() itself (in C, where built). Under load (a callback
    # pending) decisions gather and the offer that makes INLINE_BATCH seals them all in
    # one go. Anything else (another kind, the Python template) waits for the sealing
    # step of the next loop turn, a chunk a turn, and the decisions behind it wait with
    # it. The writer only writes what is sealed, after its linger.
    inline = event.seal_decisions is not None
    batch = pipeline.INLINE_BATCH

    async def go() -> tuple[AuditPipeline, MemorySink, int]:
        loop = asyncio.get_running_loop()
        sink = MemorySink()
        p = AuditPipeline(sink, writer="e", linger=0.5)
        await p.start()
        await asyncio.sleep(0.05)  # the writer has resumed the chain head
        for i in range(3):
            assert p.offer("decision", decision(i))
            assert len(p._sealed) == (i + 1 if inline else i)  # noqa: SLF001
            await asyncio.sleep(0.01)  # idle again (the first offer woke the writer)
        assert [s.seq for s in p._sealed] == [1, 2, 3]  # noqa: SLF001
        if inline:
            # Busy: the first batch - 1 wait, the batch-th seals them all, in order.
            for i in range(3, 3 + batch):
                loop.call_soon(lambda: None)
                assert p.offer("decision", decision(i))
                assert len(p._sealed) == (3 + batch if i == 2 + batch else 3)  # noqa: SLF001
            await asyncio.sleep(0)
        budget_at = len(p._sealed)  # noqa: SLF001
        # A budget event waits for the step; the decisions behind it wait with it (order),
        # until a busy offer makes a batch of what waits (the budget event included).
        await p.record("budget", {"op": "reserve"})
        sealed, waiting = budget_at, 1
        last = budget_at + 1 + 2 * SEAL_CHUNK
        for i in range(budget_at + 1, last):
            loop.call_soon(lambda: None)
            assert p.offer("decision", decision(i))
            waiting += 1
            if inline and waiting >= batch:
                sealed, waiting = sealed + waiting, 0
            assert len(p._sealed) == sealed  # noqa: SLF001
        sealed_per_turn = []
        for _ in range(4):
            await asyncio.sleep(0)
            sealed_per_turn.append(len(p._sealed))  # noqa: SLF001
        steps = [min(sealed + SEAL_CHUNK * (k + 1), last) for k in range(4)]
        assert sealed_per_turn == steps
        assert p.offer("decision", decision(last))  # idle, nothing waits: sealed at once
        assert len(p._sealed) == (last + 1 if inline else last)  # noqa: SLF001
        assert sink.lines == []  # still lingering: nothing written yet
        await p.flush()
        assert len(sink.lines) == last + 1
        await p.close()
        return p, sink, budget_at

    p, sink, budget_at = run(go)
    evs = [json.loads(x) for x in sink.lines]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["kind"] for e in evs].count("budget") == 1 and evs[budget_at]["kind"] == "budget"
    decisions = [e["decision_id"] for e in evs if e["kind"] == "decision"]
    assert decisions == [decision(i)["decision_id"] for i in range(len(evs)) if i != budget_at]
    from proctor.server.audit.verify import verify

    assert verify(((f"mem:{i}", ln, False) for i, ln in enumerate(sink.lines, 1))).ok


def test_shed_under_a_stalled_sink_records_the_gap_and_count() -> None:
    async def go() -> tuple[AuditPipeline, MemorySink]:
        sink = MemorySink()
        sink.gate.clear()
        p = AuditPipeline(sink, writer="s", queue_size=10, full_policy="shed", max_batch=4,
                          linger=0.01)
        await p.record("decision", decision(0))
        await asyncio.sleep(0.05)  # writer picked up event 0 and is stuck in the sink
        t0 = time.perf_counter()
        for i in range(1, 101):
            await p.record("decision", decision(i))
        assert time.perf_counter() - t0 < 0.5, "shed mode must never wait"
        sink.gate.set()
        await p.close()
        return p, sink

    p, sink = run(go)
    evs = [json.loads(x) for x in sink.lines]
    gaps = [e for e in evs if e["kind"] == "gap"]
    decided = [e for e in evs if e["kind"] == "decision"]
    assert p.stats["shed"] == 90
    assert len(gaps) == 1 and gaps[0]["count"] == 90
    assert len(decided) == 11
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    # the gap sits where the hole is: after the 11 kept events, chained like any other
    assert evs[-1]["kind"] == "gap"
    from proctor.server.audit.verify import verify

    rep = verify(((f"mem:{i}", ln, False) for i, ln in enumerate(sink.lines, 1)))
    assert rep.ok and rep.gap_events == 1 and rep.shed == 90


def test_block_waits_for_room_and_loses_nothing() -> None:
    async def go() -> MemorySink:
        sink = MemorySink()
        sink.gate.clear()
        p = AuditPipeline(sink, writer="b", queue_size=5, max_batch=2)
        task = asyncio.ensure_future(asyncio.gather(*(p.record("decision", decision(i))
                                                      for i in range(40))))
        await asyncio.sleep(0.1)
        assert not task.done(), "block mode must wait while the sink is stalled"
        sink.gate.set()
        await asyncio.wait_for(task, 5)
        await p.close()
        with pytest.raises(AuditClosed):
            await p.record("decision", decision(99))
        return sink

    sink = run(go)
    assert len(sink.lines) == 40


def test_failed_writes_are_retried_without_duplicates() -> None:
    async def go() -> AuditPipeline:
        sink = MemorySink()
        sink.fail_next = 3
        p = AuditPipeline(sink, writer="r")
        for i in range(10):
            await p.record("decision", decision(i))
        await p.close()
        return p

    p = run(go)
    lines = p.sink.lines  # type: ignore[attr-defined]
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 11))
    assert p.stats["sink_errors"] == 3


def test_sync_durability_survives_sigkill(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.audit.sync_writer", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    answered: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            answered.append(line.split()[1])
            if len(answered) >= 2000:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # anything printed before the kill, even past our 2000, was answered too
    assert proc.stdout is not None
    answered += [ln.split()[1] for ln in proc.stdout.read().splitlines() if ln.startswith("ok ")]
    on_disk = {e["decision_id"] for e in _lines_lenient(tmp_path)}
    missing = [d for d in answered if d not in on_disk]
    assert not missing, f"{len(missing)} answered events not on disk"
    assert verify_dir(tmp_path).ok


def _lines_lenient(root: Path) -> list[dict]:
    out = []
    for files in list_segments(root).values():
        for f in files:
            for x in f.read_bytes().splitlines(keepends=True):
                if x.endswith(b"\n"):
                    out.append(json.loads(x))
    return out


def test_dir_reader_merges_writers_and_resumes_from_a_cursor(tmp_path: Path) -> None:
    async def go() -> None:
        a = AuditPipeline(FileSink(tmp_path, segment_bytes=4096), writer="host:1:a")
        b = AuditPipeline(FileSink(tmp_path, segment_bytes=4096), writer="host:2:b")
        for i in range(100):
            await a.record("decision", decision(i))
            await b.record("decision", decision(1000 + i))
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await a.close()
        await b.close()

    run(go)
    r = DirReader(tmp_path)
    first = r.poll(70)
    for it in first:
        r.ack(it)
    keys = [it.key for it in first]
    assert keys == sorted(keys), "backlog merged in time order"
    cur = r.cursor()
    assert len(cur) < 400
    rest = []
    r2 = DirReader(tmp_path, cur)
    while batch := r2.poll(33):
        for it in batch:
            r2.ack(it)
        rest += batch
    ids = [it.event["decision_id"] for it in first + rest]
    assert len(ids) == 200 and len(set(ids)) == 200
    # a cursor taken at the end resumes to nothing; new events then show up
    assert DirReader(tmp_path, r2.cursor()).poll() == []
    _write(tmp_path, 3, writer="host:3:c")
    later = DirReader(tmp_path, r2.cursor()).poll()
    assert [it.event["writer"] for it in later] == ["host:3:c"] * 3


def test_a_resumed_head_that_needs_escaping_still_chains_valid_json() -> None:
    """The decision template writes prev_hash unescaped; a head a sink hands back is
    checked first (a damaged or foreign segment may hold anything)."""

    class Resuming(MemorySink):
        def resume(self, writer: str) -> tuple[int, str] | None:
            return 7, 'not "hex"\\'

    async def go() -> Resuming:
        sink = Resuming()
        p = AuditPipeline(sink, writer="w")
        for i in range(3):
            await p.record("decision", decision(i))
        await p.close()
        return sink

    evs = [json.loads(x) for x in run(go).lines]
    assert [e["seq"] for e in evs] == [8, 9, 10]
    assert evs[0]["prev_hash"] == 'not "hex"\\'
    assert evs[1]["prev_hash"] == evs[0]["hash"] and evs[2]["prev_hash"] == evs[1]["hash"]


def test_a_lingering_writer_writes_at_once_when_a_batch_waits_or_the_queue_is_full() -> None:
    """The linger gathers small batches only: a full batch, a full queue (block policy:
    callers wait for room), a flush or a close end it at once."""
    async def go() -> tuple[float, float, float, MemorySink]:
        sink = MemorySink()
        p = AuditPipeline(sink, writer="l", linger=30.0, queue_size=64, max_batch=16)
        await p.start()
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        for i in range(500):  # far past the queue: record() waits for room each time
            await p.record("decision", decision(i))
        burst = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert p.offer("decision", decision(500))
        await p.flush()
        flushed = time.perf_counter() - t0
        assert p.offer("decision", decision(501))  # one small event: the writer lingers
        await asyncio.sleep(0.1)
        lingering = len(sink.lines)
        t0 = time.perf_counter()
        await p.close()
        closed = time.perf_counter() - t0
        assert lingering == 501
        return burst, flushed, closed, sink

    burst, flushed, closed, sink = run(go)
    assert burst < 5 and flushed < 5 and closed < 5, (burst, flushed, closed)
    assert len(sink.lines) == 502
