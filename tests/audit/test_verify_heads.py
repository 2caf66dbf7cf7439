"""`proctor audit verify` (the real CLI, a subprocess) against audits written by real
`proctor serve` processes and a real writer, then tampered with: a cut tail, a
half-written last line, a deleted head segment, a deleted writer, a deleted head
checkpoint and a duplicated key all fail, with and without an HMAC key."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import grpc
import pytest

from proctor.server.audit.file_sink import FileSink, list_segments
from proctor.server.audit.head import head_bytes, head_path
from proctor.server.audit.writer import AuditWriter
from proctor.v1 import decisions_pb2, decisions_pb2_grpc
from tests.audit.helpers import decision, run
from tests.support.proctor import run_proctor, start_proctor

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
KEY = "k3y"
TOPICS = [("job.{i}.send.email", ["external"]), ("job.{i}.read.pii", ["pii"]),
          ("job.{i}.delegate.internal", []), ("job.{i}.export.bulk", ["bulk-data"])]


def _evaluate(address: str, n: int) -> None:
    with grpc.insecure_channel(address) as ch:
        stub = decisions_pb2_grpc.DecisionsStub(ch)
        for i in range(n):
            topic, tags = TOPICS[i % len(TOPICS)]
            stub.Evaluate(decisions_pb2.EvaluateRequest(
                request_id=f"r-{i}", run_id="run-v", tenant="acme", topic=topic.format(i=i),
                risk_tags=tags, delegation_path=["planner", "worker"]), timeout=10)


def _serve(workdir: Path, keyed: bool, runs: int = 2) -> Path:
    """`runs` server processes one after another on one audit dir: one writer each."""
    args: list[str] = []
    if keyed:
        (workdir / "hmac.key").parent.mkdir(parents=True, exist_ok=True)
        (workdir / "hmac.key").write_text(KEY + "\n")
        args = ["--audit-hmac-key-file", str(workdir / "hmac.key")]
    for _ in range(runs):
        srv = start_proctor(SEED, workdir, *args)
        try:
            _evaluate(srv.address, 40)
        finally:
            assert srv.stop() == 0, srv.log()
    return workdir / "audit"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    base = tmp_path_factory.mktemp("served")
    return {keyed: _serve(base / ("keyed" if keyed else "plain"), keyed)
            for keyed in (False, True)}


@pytest.fixture(params=[False, True], ids=["plain", "hmac"])
def audit(request: pytest.FixtureRequest, served: dict[bool, Path],
          tmp_path: Path) -> tuple[Path, bool]:
    """A fresh copy of a served audit dir (two writers), and whether it is keyed."""
    copy = tmp_path / "audit"
    shutil.copytree(served[request.param], copy)
    return copy, request.param


def _verify(audit_dir: Path, keyed: bool) -> tuple[int, str]:
    args = ["audit", "verify", "--audit-dir", str(audit_dir)]
    if keyed:
        key = audit_dir.parent / "hmac.key"
        key.write_text(KEY + "\n")
        args += ["--hmac-key-file", str(key)]
    done = run_proctor(*args, cwd=audit_dir.parent)
    return done.returncode, done.stdout + done.stderr


def _segments(audit_dir: Path) -> list[list[Path]]:
    return list(list_segments(audit_dir).values())


def test_an_untouched_served_audit_verifies(audit: tuple[Path, bool]) -> None:
    root, keyed = audit
    assert len(_segments(root)) == 2 and len(list(root.glob("*.head"))) == 2
    code, out = _verify(root, keyed)
    assert code == 0 and "OK: " in out and " 2 writers" in out, out


def test_a_cut_tail_fails(audit: tuple[Path, bool]) -> None:
    root, keyed = audit
    seg = _segments(root)[0][-1]
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:-3]))
    code, out = _verify(root, keyed)
    assert code == 1 and "the tail was cut (3 events missing)" in out, out


def test_a_half_written_last_line_fails(audit: tuple[Path, bool]) -> None:
    root, keyed = audit
    seg = _segments(root)[1][-1]
    data = seg.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    seg.write_bytes(data[: last + (len(data) - last) // 2])
    code, out = _verify(root, keyed)
    assert code == 1 and "torn final line" in out and "the tail was cut" in out, out


def test_a_deleted_writer_fails(audit: tuple[Path, bool]) -> None:
    root, keyed = audit
    for seg in _segments(root)[0]:
        seg.unlink()
    code, out = _verify(root, keyed)
    assert code == 1 and "no events, but the head checkpoint" in out, out
    assert "the writer's segments were deleted" in out and "now missing" in out, out


def test_a_deleted_head_checkpoint_fails(audit: tuple[Path, bool]) -> None:
    root, keyed = audit
    next(root.glob("*.head")).unlink()
    code, out = _verify(root, keyed)
    assert code == 1 and "no head checkpoint" in out, out


def test_a_duplicated_key_fails(audit: tuple[Path, bool]) -> None:
    # The key written twice, the forged value first: a parser keeping the last value
    # still finds the stored hash (and HMAC); one keeping the first reads "deny".
    root, keyed = audit
    seg = _segments(root)[0][0]
    lines = seg.read_bytes().splitlines(keepends=True)
    i = next(n for n, line in enumerate(lines) if b'"outcome":"allow"' in line)
    lines[i] = b'{"outcome":"deny",' + lines[i][1:]
    assert json.loads(lines[i])["outcome"] == "allow"
    seg.write_bytes(b"".join(lines))
    code, out = _verify(root, keyed)
    assert code == 1 and "not the canonical form" in out and "hash mismatch" not in out, out


def test_a_head_rewritten_to_match_a_cut_tail(audit: tuple[Path, bool]) -> None:
    # Cut the tail and rewrite the head to the new end: only the HMAC can tell.
    root, keyed = audit
    seg = _segments(root)[0][-1]
    lines = seg.read_bytes().splitlines(keepends=True)
    seg.write_bytes(b"".join(lines[:-1]))
    ev = json.loads(lines[-2])
    forged = head_bytes(ev["writer"], ev["seq"], ev["hash"], seg.name,
                        b"guess" if keyed else None)
    head_path(root, ev["writer"]).write_bytes(forged)
    code, out = _verify(root, keyed)
    if keyed:
        assert code == 1 and "head checkpoint hmac mismatch" in out, out
    else:
        assert code == 0, out  # without a key nothing is secret: documented


def _write_segments(root: Path, n: int, key: bytes | None) -> None:
    """A real writer (pipeline and file sink) with small segments."""
    async def go() -> None:
        p = AuditWriter(FileSink(root, segment_bytes=4096, hmac_key=key), writer="w:1",
                          hmac_key=key)
        for i in range(n):
            await p.record("decision", decision(i))
            if i % 10 == 9:
                await p.flush()
        await p.close()

    run(go)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "hmac"])
@pytest.mark.parametrize("which", ["last", "first"])
def test_a_deleted_segment_fails(tmp_path: Path, keyed: bool, which: str) -> None:
    root = tmp_path / "audit"
    _write_segments(root, 120, KEY.encode() if keyed else None)
    segs = list_segments(root)["w_1"]
    assert len(segs) > 3
    code, out = _verify(root, keyed)
    assert code == 0, out
    (segs[-1] if which == "last" else segs[0]).unlink()
    code, out = _verify(root, keyed)
    if which == "last":
        assert code == 1 and f"(in {segs[-1].name}, now missing)" in out, out
    else:
        assert code == 1 and "chain starts at seq" in out and "missing (deleted)" in out, out


def test_a_killed_server_still_verifies(tmp_path: Path) -> None:
    # kill -9 leaves the head at most a batch behind what is on disk: not a break.
    srv = start_proctor(SEED, tmp_path, "--audit-durability", "sync")
    try:
        _evaluate(srv.address, 60)
    finally:
        srv.stop(signal.SIGKILL)
    code, out = _verify(tmp_path / "audit", False)
    assert code == 0 and "OK: " in out, out
