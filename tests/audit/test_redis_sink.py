"""The Redis sink against a real private redis-server: outages, spool, exactly-once replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis

from proctor.server.audit import redis_sink
from proctor.server.audit.event import seal
from proctor.server.audit.redis_sink import RedisSink, heads_key, runs
from proctor.server.audit.sink import Sealed
from proctor.server.audit.spool import Spool
from proctor.server.audit.verify import verify_stream
from proctor.server.audit.writer import AuditWriter
from proctor.server.cli import main as cli_main
from tests.audit.helpers import decision, run
from tests.support.ports import free_port
from tests.support.redis import RedisProcess

STREAM = "proctor:audit"


@pytest.fixture
def durable_redis(tmp_path: Path):
    """A private redis-server with an append-only file, so a restart keeps the stream."""
    r = RedisProcess(port=free_port(), workdir=tmp_path / "redis",
                     extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    try:
        yield r
    finally:
        r.stop()


def _stream_events(url: str) -> list[dict]:
    r = redis.Redis.from_url(url)
    try:
        return [json.loads(f[b"event"]) for _, f in r.xrange(STREAM)]
    finally:
        r.close()


def test_outage_mid_run_gives_exactly_n_in_order(durable_redis: RedisProcess, tmp_path: Path):
    n = 600

    async def go() -> RedisSink:
        sink = RedisSink(durable_redis.url, STREAM, tmp_path / "spool", retry_interval=0.1)
        p = AuditWriter(sink, writer="w:1", max_batch=50)
        for i in range(n):
            await p.record("decision", decision(i))
            if i == 200:
                await p.flush()
                durable_redis.stop()
            if i == 400:
                await p.flush()
                assert sink.spooled > 0, "events must spool while redis is down"
                durable_redis.start()
            if i % 25 == 0:
                await asyncio.sleep(0.005)
        await p.close()
        return sink

    sink = run(go)
    evs = _stream_events(durable_redis.url)
    assert len(evs) == n
    assert [e["seq"] for e in evs] == list(range(1, n + 1))
    assert [e["decision_id"] for e in evs] == [f"d-{i}" for i in range(n)]
    assert sink.spooled >= 150 and sink.replayed >= 150
    assert not any((tmp_path / "spool").glob("*.jsonl")), "spool removed once replayed"
    rep = verify_stream(durable_redis.url, STREAM)
    assert rep.ok and rep.events == n, rep.render()
    assert cli_main(["audit", "verify", "--redis-url", durable_redis.url,
                     "--audit-stream", STREAM]) == 0


def _sealed(writer: str, n: int) -> list[Sealed]:
    out, prev = [], ""
    for i in range(1, n + 1):
        rec = {**decision(i), "seq": i, "writer": writer, "kind": "decision", "prev_hash": prev,
               "event_id": f"e{i}", "time": "2026-01-01T00:00:00.000000Z"}
        line, prev = seal(rec, None)
        out.append(Sealed(writer, i, line))
    return out


def test_interrupted_replay_never_duplicates(redis_proc, tmp_path: Path):
    """Spool holds 1..10 and the stream already got 1..6 (a reply lost, or a cut replay)."""
    batch = _sealed("w:2", 10)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    sp = Spool(spool_dir, "w_2")
    sp.append(batch)
    sp.close()

    async def go() -> None:
        sink = RedisSink(redis_proc.url, STREAM, spool_dir)
        await sink._append("w:2", [(s.seq, s.line) for s in batch[:6]])  # noqa: SLF001
        assert await sink.resume("w:2") == (10, json.loads(batch[-1].line)["hash"])
        await sink.write(_sealed("w:2", 12)[10:])  # new events 11, 12 go after the spool
        await sink.close()

    run(go)
    evs = _stream_events(redis_proc.url)
    assert [e["seq"] for e in evs] == list(range(1, 13))
    r = redis.Redis.from_url(redis_proc.url)
    assert r.hget(heads_key(STREAM), "w:2").startswith(b"12:")
    r.close()
    assert verify_stream(redis_proc.url, STREAM).ok


def test_a_dead_writers_spool_is_replayed_by_another(redis_proc, tmp_path: Path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    dead = Spool(spool_dir, "dead_1")
    dead.append(_sealed("dead:1", 5))
    with open(dead.path, "ab") as f:
        f.write(b'{"torn')  # its last write was cut by the crash
    dead.close()  # lock released: the process is gone

    async def go() -> None:
        live = RedisSink(redis_proc.url, STREAM, spool_dir)
        await live.write(_sealed("live:1", 2))
        await live.close()

    run(go)
    evs = _stream_events(redis_proc.url)
    assert sorted((e["writer"], e["seq"]) for e in evs) == [
        *[("dead:1", i) for i in range(1, 6)], ("live:1", 1), ("live:1", 2)]
    assert not dead.path.exists()


def test_a_live_writers_spool_is_left_alone(redis_proc, tmp_path: Path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    other = Spool(spool_dir, "other_1")
    other.lock()
    other.append(_sealed("other:1", 3))

    async def go() -> None:
        live = RedisSink(redis_proc.url, STREAM, spool_dir)
        await live.write(_sealed("live:1", 1))
        await live.close()

    run(go)
    assert [e["writer"] for e in _stream_events(redis_proc.url)] == ["live:1"]
    assert other.pending()
    other.close()


def test_maxlen_caps_the_stream(redis_proc, tmp_path: Path):
    async def go() -> None:
        sink = RedisSink(redis_proc.url, STREAM, tmp_path / "spool", maxlen=100)
        batch = _sealed("w:3", 1000)
        for i in range(0, 1000, 100):
            await sink.write(batch[i : i + 100])
        await sink.close()

    run(go)
    r = redis.Redis.from_url(redis_proc.url)
    assert 100 <= r.xlen(STREAM) < 1000
    r.close()
    rep = verify_stream(redis_proc.url, STREAM)
    assert rep.ok and any("earlier events trimmed" in n for n in rep.notes)


def test_a_batch_cut_between_its_scripts_is_finished_not_duplicated(redis_proc,
                                                                     tmp_path: Path):
    """A Redis runs one script at a time: the sink never holds it for a whole batch, and a
    batch of which only the first scripts landed is finished by the retry, once."""
    batch = _sealed("w:9", 5 * redis_sink.XADD_CHUNK + 7)

    async def go() -> None:
        sink = RedisSink(redis_proc.url, STREAM, tmp_path / "spool")
        landed = 2 * redis_sink.XADD_CHUNK  # the first two scripts' worth, then a cut
        assert await sink._append(  # noqa: SLF001
            "w:9", [(s.seq, s.line) for s in batch[:landed]]) == landed
        await sink.write(batch)  # the writer's retry of the whole batch
        await sink.write(_sealed("w:9", len(batch) + 1)[len(batch):])
        await sink.close()

    run(go)
    evs = _stream_events(redis_proc.url)
    assert [e["seq"] for e in evs] == list(range(1, len(batch) + 2))
    assert verify_stream(redis_proc.url, STREAM).ok


def test_runs_are_consecutive_seqs_of_at_most_the_limit() -> None:
    items = [(s, b"x") for s in (1, 2, 3, 4, 5, 7, 8, 10)]
    assert [[s for s, _ in r] for r in runs(items, 3)] == [[1, 2, 3], [4, 5], [7, 8], [10]]
    assert list(runs([], 3)) == []
