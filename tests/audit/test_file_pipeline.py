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

from proctor.server.audit.file_sink import FileSink, list_segments
from proctor.server.audit.log import AuditClosed
from proctor.server.audit.reader import DirReader
from proctor.server.audit.sink import SinkCaps
from proctor.server.audit.verify import verify_dir
from proctor.server.audit.writer import AuditWriter
from proctor.server.cli import main as cli_main
from tests.audit.helpers import MemorySink, decision, run

ROOT = Path(__file__).resolve().parents[2]


def _lines(root: Path) -> list[dict]:
    out = []
    for files in list_segments(root).values():
        for f in files:
            out += [json.loads(x) for x in f.read_bytes().splitlines()]
    return out


def _write(root: Path, n: int, writer: str = "w1", **kw) -> AuditWriter:
    async def go() -> AuditWriter:
        sink = FileSink(root, segment_bytes=kw.pop("segment_bytes", 8192),
                        hmac_key=kw.get("hmac_key"))
        p = AuditWriter(sink, writer=writer, **kw)
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
        p = AuditWriter(sink, writer="g", durability="sync")
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


def test_events_keep_the_order_they_were_recorded_in_whatever_their_kind() -> None:
    # offer() and record(), decisions and other kinds, interleaved: one chain, in the
    # order of the calls; nothing is written while the writer lingers, a flush writes it.
    async def go() -> tuple[MemorySink, list[str]]:
        sink = MemorySink()
        p = AuditWriter(sink, writer="e", linger=30.0)
        p.start()
        expected: list[str] = []
        for i in range(300):
            if i % 7 == 3:
                await p.record("budget", {"op": "reserve", "n": i})
                expected.append(f"budget-{i}")
            elif not p.offer("decision", decision(i)):
                await p.record("decision", decision(i))
                expected.append(f"d-{i}")
            else:
                expected.append(f"d-{i}")
            if i % 50 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert sink.lines == []  # still lingering: nothing written yet
        await p.flush()
        assert len(sink.lines) == 300
        await p.close()
        return sink, expected

    sink, expected = run(go)
    evs = [json.loads(x) for x in sink.lines]
    assert [e["seq"] for e in evs] == list(range(1, 301))
    got = [e["decision_id"] if e["kind"] == "decision" else f"budget-{e['n']}" for e in evs]
    assert got == expected
    from proctor.server.audit.verify import verify

    assert verify(((f"mem:{i}", ln, False) for i, ln in enumerate(sink.lines, 1))).ok


def test_shed_under_a_stalled_sink_records_the_gap_and_count() -> None:
    async def go() -> tuple[AuditWriter, MemorySink]:
        sink = MemorySink()
        sink.gate.clear()
        p = AuditWriter(sink, writer="s", queue_size=10, full_policy="shed", max_batch=4,
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
    shed = p.stats["shed"]
    assert len(gaps) == 1 and gaps[0]["count"] == shed
    # what the queue held (10, the stuck batch included) was kept; the rest is the gap
    assert len(decided) == 10 and len(decided) + shed == 101
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    # the gap sits where the hole is: after the 11 kept events, chained like any other
    assert evs[-1]["kind"] == "gap"
    from proctor.server.audit.verify import verify

    rep = verify(((f"mem:{i}", ln, False) for i, ln in enumerate(sink.lines, 1)))
    assert rep.ok and rep.gap_events == 1 and rep.shed == shed


def test_block_waits_for_room_and_loses_nothing() -> None:
    async def go() -> MemorySink:
        sink = MemorySink()
        sink.gate.clear()
        p = AuditWriter(sink, writer="b", queue_size=5, max_batch=2)
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
    async def go() -> AuditWriter:
        sink = MemorySink()
        sink.fail_next = 3
        p = AuditWriter(sink, writer="r")
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
        a = AuditWriter(FileSink(tmp_path, segment_bytes=4096), writer="host:1:a")
        b = AuditWriter(FileSink(tmp_path, segment_bytes=4096), writer="host:2:b")
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
        caps = SinkCaps(durable=True, resumable=True)

        async def resume(self, writer: str) -> tuple[int, str] | None:
            return 7, 'not "hex"\\'

    async def go() -> Resuming:
        sink = Resuming()
        p = AuditWriter(sink, writer="w")
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
        p = AuditWriter(sink, writer="l", linger=30.0, queue_size=64, max_batch=16)
        p.start()
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


def test_a_bulk_producer_leaves_room_for_single_events() -> None:
    """room_for() (EvaluateBatch's wait before it records) holds a bulk producer back
    short of the queue's end, so a single event recorded meanwhile finds room at once;
    the bulk producer goes on once the writer has stored what was queued."""
    async def go() -> MemorySink:
        sink = MemorySink()
        p = AuditWriter(sink, writer="b", linger=30.0, queue_size=64, max_batch=8)
        p.start()
        sink.gate.clear()  # the sink stalls: nothing leaves the queue
        for i in range(40):
            await p.record("decision", decision(i))
        await sink.entered.wait()
        bulk = asyncio.ensure_future(p.room_for(32))
        await asyncio.sleep(0.05)
        assert not bulk.done()  # 40 queued + 32 would eat into the singles' part
        for i in range(40, 60):  # single events still go in without waiting
            assert p.offer("decision", decision(i))
        sink.gate.set()
        await asyncio.wait_for(bulk, 5)
        await p.close()
        return sink

    sink = run(go)
    assert [json.loads(x)["seq"] for x in sink.lines] == list(range(1, 61))
