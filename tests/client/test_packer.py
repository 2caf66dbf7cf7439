"""The packer process (proctor.client.packer): local decisions become IngestBatch bytes in a
child of the client; whatever happens to that child, every decision reaches the audit once."""

from __future__ import annotations

import logging
import marshal
import os
import signal
import sys
from pathlib import Path

import pytest

from proctor.client import ProctorClient
from proctor.client.packer import Packer
from proctor.client.spool import open_spool
from proctor.server.audit.verify import verify_dir
from proctor.v1 import audit_pb2
from tests.client.conftest import SEED_POLICY
from tests.client.test_local import _local_events, _serve, _wait, _warm


def _record(i: int) -> tuple[object, ...]:
    return (f"job.{i}.delegate.internal", ("planner", "p"), ("bulk-data",), "acme", "run",
            f"r{i}", {"k": "v"} if i % 2 else None, 1, "rule", "because", "v1",
            f"local-x-{i:x}", ("external",), 1_700_000_000_000_000_000 + i, i % 7)


def test_the_child_and_the_thread_pack_the_same_batches_in_order(tmp_path: Path) -> None:
    s = open_spool(tmp_path, "k")
    for i in range(2500):
        assert s.append(_record(i))
    span = s.unsent()
    assert span is not None
    path, offset, end = span
    child, in_thread = Packer(), Packer(use_child=False)
    try:
        got: list[str] = []
        seq = 0
        while offset < end:
            seq += 1
            batch, taken, count = child.pack(path, offset, end, seq, 1000, 64 << 10)
            assert child.pid is not None  # packed by a child process
            assert (batch, taken, count) == in_thread.pack(path, offset, end, seq, 1000,
                                                           64 << 10)
            msg = audit_pb2.IngestBatch.FromString(batch)
            assert msg.batch_seq == seq and len(msg.decisions) == count > 0
            got += [d.response.decision_id for d in msg.decisions]
            offset += taken
    finally:
        child.close()
        s.close(remove=True)
    assert got == [f"local-x-{i:x}" for i in range(2500)]


def test_a_spooled_record_packs_into_the_local_decision_it_holds(tmp_path: Path) -> None:
    segment = tmp_path / "00000000"
    data = marshal.dumps(_record(5), 4)
    segment.write_bytes(len(data).to_bytes(4, "little") + data)
    packer = Packer()
    try:
        batch, taken, count = packer.pack(str(segment), 0, 4 + len(data), 9, 1000, 1 << 20)
    finally:
        packer.close()
    d = audit_pb2.IngestBatch.FromString(batch).decisions[0]
    assert (taken, count) == (4 + len(data), 1)
    assert (d.request.topic, list(d.request.delegation_path), dict(d.request.labels)) == (
        "job.5.delegate.internal", ["planner", "p"], {"k": "v"})
    assert (d.response.decision_id, d.latency_us) == ("local-x-5", 5)


def _decide(c: ProctorClient, n: int) -> list[str]:
    return [c.evaluate("job.1.delegate.internal", delegation_path=["p"]).decision_id
            for _ in range(n)]


def test_a_killed_packer_loses_and_repeats_no_decision(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    ids: list[str] = []
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("", "p"))
            local = c.local
            assert local is not None
            packer = local.shipper.packer
            for _ in range(2):
                ids += _decide(c, 500)
                _wait(lambda: packer.pid is not None)
                pid = packer.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                ids += _decide(c, 500)  # while the shipper finds out
            _wait(lambda: not local.spool.pending)
            assert packer.pid is not None and packer.pid != pid  # a new child took over
            ids += _decide(c, 100)
    finally:
        assert server.stop() == 0, server.log()
    assert all(i.startswith("local-") for i in ids)
    events = _local_events(tmp_path / "server" / "audit")
    assert sorted(e["decision_id"] for e in events) == sorted(ids)  # each exactly once
    assert verify_dir(tmp_path / "server" / "audit").ok


def test_without_a_packer_process_the_shipper_thread_packs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    caplog.set_level(logging.WARNING, "proctor.client.local")
    ids: list[str] = []
    try:
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("", "p"))
            local = c.local
            assert local is not None
            for _ in range(5):
                ids += _decide(c, 300)
                _wait(lambda: not local.spool.pending)
            assert local.shipper.packer.pid is None
    finally:
        monkeypatch.undo()
        assert server.stop() == 0, server.log()
    events = _local_events(tmp_path / "server" / "audit")
    assert sorted(e["decision_id"] for e in events) == sorted(ids)
    warned = [r for r in caplog.records if "packer" in r.getMessage()]
    assert len(warned) == 1  # said once, however many batches it packed itself
