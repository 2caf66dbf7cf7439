"""The Redis sink against a real private redis-server: outages, spool, exactly-once replay."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.audit.event import seal
from proctor.server.audit.pipeline import AuditPipeline
from proctor.server.audit.redis_sink import RedisSink, append_args, append_args_py, heads_key
from proctor.server.audit.sink import Sealed
from proctor.server.audit.spool import Spool
from proctor.server.audit.verify import verify_stream
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
        p = AuditPipeline(sink, writer="w:1", max_batch=50)
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
    """Spool holds 1..10 and the stream already got 1..6 (EXEC reply lost, or a cut replay)."""
    batch = _sealed("w:2", 10)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    sp = Spool(spool_dir, "w_2")
    sp.append(batch)
    sp.close()
    sink = RedisSink(redis_proc.url, STREAM, spool_dir)
    sink._xadd("w:2", [(s.seq, s.line) for s in batch[:6]])  # noqa: SLF001 - simulate
    sink.resume("w:2")
    sink.write(_sealed("w:2", 12)[10:])  # new events 11, 12 go after the spool
    sink.close()
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
    live = RedisSink(redis_proc.url, STREAM, spool_dir)
    live.write(_sealed("live:1", 2))
    live.close()
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
    live = RedisSink(redis_proc.url, STREAM, spool_dir)
    live.write(_sealed("live:1", 1))
    live.close()
    assert [e["writer"] for e in _stream_events(redis_proc.url)] == ["live:1"]
    assert other.pending()
    other.close()


def test_maxlen_caps_the_stream(redis_proc, tmp_path: Path):
    sink = RedisSink(redis_proc.url, STREAM, tmp_path / "spool", maxlen=100)
    batch = _sealed("w:3", 1000)
    for i in range(0, 1000, 100):
        sink.write(batch[i : i + 100])
    sink.close()
    r = redis.Redis.from_url(redis_proc.url)
    assert 100 <= r.xlen(STREAM) < 1000
    r.close()
    rep = verify_stream(redis_proc.url, STREAM)
    assert rep.ok and any("earlier events trimmed" in n for n in rep.notes)


def test_a_big_batch_is_appended_in_short_scripts_in_order(redis_proc, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """A Redis runs one script at a time: the sink never holds it for a whole batch, and a
    batch cut between two of its scripts is finished by the retry, not duplicated."""
    from proctor.server.audit import redis_sink

    sent: list[int] = []  # events in each script call that reached Redis
    real = RedisSink._exchange  # noqa: SLF001

    def spy(self: RedisSink, commands: list[bytes]) -> tuple[list[int], Exception | None]:
        if not getattr(self, "_cut", False):  # the first batch: two scripts, then a cut
            self._cut = True
            replies, _ = real(self, commands[:2])
            sent.extend(replies)
            return replies, redis.ConnectionError("cut between two scripts")
        replies, failure = real(self, commands)
        sent.extend(replies)
        return replies, failure

    monkeypatch.setattr(RedisSink, "_exchange", spy)
    sink = RedisSink(redis_proc.url, STREAM, tmp_path / "spool", retry_interval=0.0)
    batch = _sealed("w:9", 5 * redis_sink.XADD_CHUNK + 7)
    sink.write(batch)  # the third script fails: the batch is spooled whole
    sink.write(_sealed("w:9", len(batch) + 1)[len(batch):])  # replays the spool first
    sink.close()
    # two full scripts, then the replay appends only what they had not: nothing twice
    assert sent[:2] == [redis_sink.XADD_CHUNK] * 2 and sum(sent) == len(batch) + 1
    assert max(sent) == redis_sink.XADD_CHUNK
    evs = _stream_events(redis_proc.url)
    assert [e["seq"] for e in evs] == list(range(1, len(batch) + 2))
    assert verify_stream(redis_proc.url, STREAM).ok


# -- the packing of append.lua's arguments: the C twin against the Python reference -------

_lines = st.one_of(
    st.binary(max_size=300),
    st.builds(  # a stored line: the digest after the last `"hash":"`, maybe cut short
        lambda head, digest, tail, nl: head + b'"hash":"' + digest + tail + (b"\n" if nl else b""),
        st.binary(max_size=200), st.binary(max_size=80), st.binary(max_size=90), st.booleans()),
)
@st.composite
def _items(draw: st.DrawFn) -> list:
    """Events whose seqs mostly run on by one, with jumps, repeats and the int64 edges."""
    seq = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(2**63 - 3)))
    out = []
    for _ in range(draw(st.integers(0, 12))):
        line = draw(_lines)
        out.append(Sealed("w", seq, line) if draw(st.booleans()) else (seq, line))
        step = draw(st.sampled_from([1, 1, 1, 1, 0, 2, -1]))
        seq = max(-(2**63), min(2**63 - 1, seq + step))
    return out


def test_the_append_args_extension_is_built() -> None:
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert append_args is not append_args_py


@pytest.mark.skipif(append_args is append_args_py, reason="the C twin is not built")
@settings(max_examples=600, deadline=None)
@given(_items(), st.integers(0, 15), st.integers(0, 15))
def test_append_args_c_twin_matches_the_python_reference(items, start, stop) -> None:
    if not 0 <= start < stop <= len(items):
        for twin in (append_args, append_args_py):
            with pytest.raises(ValueError):
                twin(items, start, stop)
        return
    args, end = append_args(items, start, stop)
    assert (args, end) == append_args_py(items, start, stop)
    seqs = [item[-2] for item in items[start:end]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one consecutive run
    assert end == stop or items[end][-2] != seqs[-1] + 1  # and the longest


@pytest.mark.skipif(append_args is append_args_py, reason="the C twin is not built")
def test_append_args_c_twin_refuses_what_is_not_an_event() -> None:
    for bad in ([b"line"], [(1,)], [("1", b"line")], [(1, "line")]):
        with pytest.raises(TypeError):
            append_args(bad, 0, 1)


def test_append_args_are_first_seq_head_then_one_line_an_event() -> None:
    def line(seq: int) -> bytes:
        return b'{"seq":%d,"hash":"%b"}\n' % (seq, b"%x" % seq * 64)

    items = [Sealed("w", 7, line(7)), Sealed("w", 8, line(8)), Sealed("w", 10, line(10))]
    for twin in (append_args, append_args_py):
        assert twin(items, 0, 3) == (
            b"$1\r\n7\r\n$66\r\n8:" + b"8" * 64 + b"\r\n"
            + b"".join(b"$%d\r\n%b\r\n" % (len(x) - 1, x[:-1]) for x in (line(7), line(8))),
            2)
        assert twin(items, 2, 3)[1] == 3
