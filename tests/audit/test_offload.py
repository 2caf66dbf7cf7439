"""The audit writer's C I/O thread (_offload.c): the file sink's writes without the GIL,
on real files and pipes; and the pipeline's way back to the executor when an offloaded
write fails."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from proctor.server.audit import offload
from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.pipeline import AuditPipeline
from proctor.server.audit.sink import Sealed
from proctor.server.audit.verify import verify_dir

pytestmark = pytest.mark.skipif(offload._offload_c is None, reason="C twin not built")  # noqa: SLF001
ROOT = Path(__file__).resolve().parents[2]


def test_the_offload_extension_is_built() -> None:
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert offload._offload_c is not None  # noqa: SLF001


def _results(thread: Any, want: int, timeout: float = 5.0) -> list[tuple[Any, Any]]:
    """Wait on the eventfd as the event loop does; the finished jobs' (token, result)."""
    got: list[tuple[Any, Any]] = []
    while len(got) < want:
        ready, _, _ = select.select([thread.fileno()], [], [], timeout)
        assert ready, f"only {len(got)} of {want} jobs finished"
        got += thread.done()
    return got


def _sealed(writer: str, first: int, n: int) -> list[Sealed]:
    def line(seq: int) -> bytes:
        return b'{"seq":%d,"writer":"%b","hash":"%064x"}\n' % (seq, writer.encode(), seq)

    return [Sealed(writer, s, line(s)) for s in range(first, first + n)]


def test_a_write_puts_every_line_in_order(tmp_path: Path) -> None:
    # more lines than one writev takes (IOV_MAX), empty ones, bytes and Sealed mixed
    items: list[Any] = [b"", *_sealed("w", 1, 2500), b"", b"tail\n", b""]
    want = b"".join(i if isinstance(i, bytes) else i.line for i in items)
    path = tmp_path / "seg"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    t = offload._offload_c.Offload()  # type: ignore[union-attr]  # noqa: SLF001
    try:
        t.write(fd, items, True, len(want), "a")
        t.write(fd, [b"x\n"], False, 1, "b")  # 2 bytes, room for 1: nothing is written
        assert _results(t, 2) == [("a", (len(want), len(want), 0)), ("b", (2, 0, 0))]
    finally:
        t.close()
        os.close(fd)
    assert path.read_bytes() == want


def test_a_failed_write_names_its_errno_and_a_bad_item_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "seg"
    path.write_bytes(b"")
    ro = os.open(path, os.O_RDONLY)
    rw = os.open(path, os.O_WRONLY | os.O_APPEND)
    t = offload._offload_c.Offload()  # type: ignore[union-attr]  # noqa: SLF001
    try:
        t.write(ro, [b"a\n"], False, 100, "ro")
        t.write(rw, [b"a\n", 7, b"b\n"], False, 100, "bad")
        (ro_token, ro_result), (bad_token, (_, written, err)) = _results(t, 2)
        assert (ro_token, ro_result) == ("ro", (2, 0, errno.EBADF))
        assert (bad_token, written, err) == ("bad", 0, errno.EINVAL)
        with pytest.raises(TypeError):
            t.write(rw, (b"a",), False, 10, "tuple")  # only a list is handed over
    finally:
        t.close()
        os.close(ro)
        os.close(rw)
    assert path.read_bytes() == b""


def test_a_write_cut_short_reports_what_landed(tmp_path: Path) -> None:
    # A file size limit cuts the writev short, then refuses the rest (EFBIG): the result
    # counts exactly the bytes on disk, which is what the file sink truncates back.
    script = """
import os, resource, signal, sys
from proctor.server.audit._offload import Offload
import select
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
t = Offload()
t.write(fd, [b"%04d" % i + b"x" * 96 for i in range(30)], False, 10**6, None)
select.select([t.fileno()], [], [], 5)
print(t.done()[0][1])
"""
    path = tmp_path / "seg"
    out = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, text=True,
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"(3000, 1000, {errno.EFBIG})"
    assert path.read_bytes() == b"".join(b"%04d" % i + b"x" * 96 for i in range(10))


def test_a_write_interrupted_by_signals_resumes_where_it_stopped() -> None:
    # A blocking pipe with a slow reader: each signal to the thread ends its writev early
    # (EINTR, or a short count) and the thread goes on from the byte it stopped at.
    import ctypes
    import signal
    import time

    # every 1000th line is longer than the pipe holds: several short writes inside it
    items = [b"%06d" % i + b"y" * (i % 300 if i % 1000 else 200_000) + b"\n"
             for i in range(6000)]
    want = b"".join(items)
    r, w = os.pipe()
    got = bytearray()

    def read() -> None:
        while chunk := os.read(r, 4096):
            got.extend(chunk)
            time.sleep(0.0005)

    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    reader = threading.Thread(target=read)
    reader.start()
    t = offload._offload_c.Offload()  # type: ignore[union-attr]  # noqa: SLF001
    try:
        t.write(w, items, False, len(want), "p")
        time.sleep(0.05)
        tids = [int(x) for x in os.listdir("/proc/self/task")
                if Path(f"/proc/self/task/{x}/comm").read_text().strip() == "audit-io"]
        assert len(tids) == 1
        libc = ctypes.CDLL(None, use_errno=True)
        sent = 0
        while not select.select([t.fileno()], [], [], 0.002)[0]:
            libc.syscall(234, os.getpid(), tids[0], signal.SIGUSR1)  # tgkill
            sent += 1
        assert t.done() == [("p", (len(want), len(want), 0))]
        assert sent > 10
    finally:
        t.close()
        os.close(w)
        reader.join(10)
        os.close(r)
        signal.signal(signal.SIGUSR1, old)
    assert bytes(got) == want


def test_close_waits_for_the_queued_jobs_then_refuses_more(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "seg", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    t = offload._offload_c.Offload()  # type: ignore[union-attr]  # noqa: SLF001
    try:
        for k in range(20):
            t.write(fd, [b"%d\n" % k] * 1000, True, 10**9, k)
        t.close()  # returns once all twenty are written
        assert [tok for tok, _ in t.done()] == list(range(20))
        with pytest.raises(RuntimeError, match="closed"):
            t.write(fd, [b"late\n"], False, 10, "late")
    finally:
        os.close(fd)
    assert (tmp_path / "seg").stat().st_size == sum(len(b"%d\n" % k) * 1000 for k in range(20))


# ---- the pipeline: offloaded when it can, the executor when it must ----------------------

FIELDS = {"request_id": "r", "run_id": "x", "tenant": "acme", "delegation_path": ("a",),
          "topic": "t.x", "risk_tags": (), "derived_tags": (), "labels": {},
          "outcome": "allow", "rule_id": "r", "reason": "", "policy_version": "v",
          "approval_id": "", "latency_us": 1}


class Counted:
    """Counts how a sink's batches were stored: offloaded, or by write() in the executor."""

    def __init__(self, sink: Any) -> None:
        self.sink, self.offloaded, self.executor = sink, 0, 0
        real_write, real_offloaded = sink.write, sink.write_offloaded

        def write(batch: list[Sealed]) -> None:
            self.executor += 1
            real_write(batch)

        async def write_offloaded(batch: list[Sealed], off: Any) -> bool:
            done = await real_offloaded(batch, off)
            self.offloaded += done
            return done

        sink.write, sink.write_offloaded = write, write_offloaded


async def _record(p: AuditPipeline, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        fields = {**FIELDS, "decision_id": f"d{i}"}
        if not p.offer("decision", fields):
            await p.record("decision", fields)
        if i % 50 == 49:
            await asyncio.sleep(0.02)  # past the linger: a batch a pause


def test_a_pipeline_writes_its_batches_through_the_thread(tmp_path: Path) -> None:
    counted = Counted(FileSink(tmp_path / "audit"))

    async def main() -> None:
        p = AuditPipeline(counted.sink, writer="w", linger=0.01)
        await _record(p, 0, 1000)
        await p.close()

    asyncio.run(main())
    # the first batch opens the segment in the executor; the others go through the thread
    assert counted.executor == 1 and counted.offloaded >= 10
    rep = verify_dir(tmp_path / "audit")
    assert rep.ok and rep.events == 1000, rep.render()


def test_a_failed_offloaded_write_is_cut_back_and_written_once_by_the_executor(
        tmp_path: Path) -> None:
    counted = Counted(FileSink(tmp_path / "audit"))
    sink = counted.sink

    async def main() -> None:
        p = AuditPipeline(sink, writer="w", linger=0.01)
        await _record(p, 0, 100)
        await p.flush()
        # the open segment's descriptor turns read-only: the next offloaded write fails
        ro = os.open(sink.path, os.O_RDONLY)
        os.dup2(ro, sink._fd)  # noqa: SLF001
        os.close(ro)
        await _record(p, 100, 300)
        await p.close()

    asyncio.run(main())
    assert counted.executor >= 2  # the failed batch went to write(): a new segment
    rep = verify_dir(tmp_path / "audit")
    assert rep.ok and rep.events == 300, rep.render()
    ids = [json.loads(x)["decision_id"] for f in sorted((tmp_path / "audit").glob("*.jsonl"))
           for x in f.read_bytes().splitlines()]
    assert ids == [f"d{i}" for i in range(300)]
