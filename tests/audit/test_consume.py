"""`proctor audit consume` as a real process: SIGKILL mid-stream, restart, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from proctor.server.audit.redis_sink import RedisSink
from proctor.server.audit.verify import verify_dir
from tests.audit.test_redis_sink import STREAM, _sealed

ROOT = Path(__file__).resolve().parents[2]


def _fill(url: str, tmp: Path, writer: str, n: int) -> None:
    async def go() -> None:
        sink = RedisSink(url, STREAM, tmp / f"spool-{writer}")
        batch = _sealed(writer, n)
        for i in range(0, n, 500):
            await sink.write(batch[i : i + 500])
        await sink.close()

    asyncio.run(go())


def _consume(url: str, out: Path, consumer: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "proctor.server.cli", "audit", "consume", "--redis-url", url,
         "--audit-stream", STREAM, "--group", "archive", "--consumer", consumer,
         "--out", str(out), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _count_lines(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl"))


def _output(out: Path) -> list[dict]:
    evs = []
    for p in sorted(out.glob("*.jsonl")):
        evs += [json.loads(x) for x in p.read_bytes().splitlines()]
    return evs


def test_consumer_killed_mid_stream_delivers_everything_once(redis_proc, tmp_path: Path):
    n = 4000
    _fill(redis_proc.url, tmp_path, "w:1", n)
    out = tmp_path / "out"
    first = _consume(redis_proc.url, out, "c1", "--batch", "25")
    deadline = time.monotonic() + 30
    while _count_lines(out) < 800 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    written_before = _count_lines(out)
    assert 0 < written_before < n, "killed mid-stream"
    second = _consume(redis_proc.url, out, "c1", "--batch", "500", "--max-idle", "1")
    stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr
    evs = _output(out)
    assert len(evs) == n
    assert sorted(e["seq"] for e in evs) == list(range(1, n + 1))
    assert verify_dir(out).ok
    r = redis.Redis.from_url(redis_proc.url)
    assert r.xpending(STREAM, "archive")["pending"] == 0
    r.close()


def test_entries_pending_for_a_dead_consumer_are_reclaimed(redis_proc, tmp_path: Path):
    n = 300
    _fill(redis_proc.url, tmp_path, "w:2", n)
    r = redis.Redis.from_url(redis_proc.url)
    r.xgroup_create(STREAM, "archive", id="0")
    got = r.xreadgroup("archive", "dead", {STREAM: ">"}, count=120)  # then it dies: no XACK
    assert len(got[0][1]) == 120
    out = tmp_path / "out"
    proc = _consume(redis_proc.url, out, "c2", "--claim-idle-ms", "200", "--max-idle", "1.5")
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "120 claimed" in stdout
    evs = _output(out)
    assert sorted(e["seq"] for e in evs) == list(range(1, n + 1))
    assert r.xpending(STREAM, "archive")["pending"] == 0
    r.close()


def test_redelivered_entries_already_written_are_not_written_twice(redis_proc, tmp_path):
    from proctor.server.audit.consume import Consumer

    n = 50
    _fill(redis_proc.url, tmp_path, "w:3", n)
    out = tmp_path / "out"
    c = Consumer(redis_proc.url, STREAM, "archive", "c3", out, block_ms=100)
    c.run(max_idle=0.3)
    # the write landed but the XACK did not (a crash in between): the entries come back
    r = redis.Redis.from_url(redis_proc.url)
    r.xgroup_setid(STREAM, "archive", id="0")
    r.close()
    c2 = Consumer(redis_proc.url, STREAM, "archive", "c3", out, block_ms=100)
    c2.run(max_idle=0.3)
    assert c2.duplicates == n and c2.written == 0
    assert len(_output(out)) == n
