"""A full audit disk (issue 19): a real `proctor serve` whose --audit-dir is a small tmpfs.

While the disk is full: Decisions is NOT_SERVING and new decisions fail closed with
UNAVAILABLE naming the error; every decision answered is in the audit once the disk
has room again; and SIGTERM exits within --grace-seconds plus the audit's bounded
close whatever the disk does, logging what it could not store.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from proctor.server.audit.file_sink import list_segments
from proctor.server.main import AUDIT_CLOSE_SECONDS
from proctor.v1 import decisions_pb2, decisions_pb2_grpc
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
DECISIONS = "proctor.v1.Decisions"
GRACE = 1.0


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs at tmp_path/proc/audit; skipped (with the reason) where it cannot be
    mounted (not root, no mount in this sandbox)."""
    where = tmp_path / "proc" / "audit"
    where.mkdir(parents=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("a full-disk test needs root and mount(8) to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip()}"
        print(reason)
        pytest.skip(reason)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Fill the disk to its last byte with one file; returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass
    return filler


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _stored_ids(disk: Path) -> set[str]:
    ids = set()
    for files in list_segments(disk).values():
        for f in files:
            for line in f.read_bytes().splitlines(keepends=True):
                if line.endswith(b"\n"):
                    ids.add(json.loads(line).get("decision_id", ""))
    return ids


class Caller:
    """Evaluate calls, one after another: the decision ids answered, the refusals seen."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = decisions_pb2_grpc.DecisionsStub(self.channel)
        self.answered: list[str] = []
        self.refused: list[str] = []
        self.n = 0

    def call(self) -> None:
        self.n += 1
        req = decisions_pb2.EvaluateRequest(
            topic=f"job.{self.n}.read.docs", tenant="acme", run_id="r",
            request_id=f"q-{self.n}", delegation_path=["planner"])
        try:
            self.answered.append(self.stub.Evaluate(req, timeout=10).decision_id)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (e.code(), e.details())
            self.refused.append(e.details() or "")

    def until_refused(self, timeout: float = 20.0) -> None:
        """Call until a call is refused (the server has seen the disk full)."""
        seen = len(self.refused)
        deadline = time.monotonic() + timeout
        while len(self.refused) == seen:
            assert time.monotonic() < deadline, "no call refused in time"
            self.call()

    def close(self) -> None:
        self.channel.close()


def test_a_full_disk_fails_decisions_closed_and_loses_no_answered_one(
        small_disk: Path, tmp_path: Path) -> None:
    server = ProctorProcess(SEED, tmp_path / "proc", free_port(),
                            ("--grace-seconds", str(GRACE), "--log-level", "info"))
    server.start()
    caller = Caller(server.address)
    try:
        for _ in range(20):
            caller.call()
        filler = _fill(small_disk)
        caller.until_refused()
        assert "No space left on device" in caller.refused[-1]
        assert server.health(DECISIONS) == health_pb2.HealthCheckResponse.NOT_SERVING
        for _ in range(5):  # still full: every new decision fails closed
            caller.call()
        assert caller.refused[-5:] == [caller.refused[-1]] * 5

        filler.unlink()  # room again: what was kept is written, serving again
        _until(lambda: server.health(DECISIONS) == health_pb2.HealthCheckResponse.SERVING)
        for _ in range(20):
            caller.call()
        answered = set(caller.answered)
        _until(lambda: answered <= _stored_ids(small_disk))

        # Full again, and SIGTERM while it is: the exit is bounded; what could not be
        # stored is logged with its count, never dropped silently.
        filler = _fill(small_disk)
        caller.until_refused()
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=GRACE + AUDIT_CLOSE_SECONDS + 15) == 0
        assert time.monotonic() - t0 < GRACE + AUDIT_CLOSE_SECONDS + 10
        lost = set(caller.answered) - _stored_ids(small_disk)
        if lost:
            assert f"could not store {len(lost)} events" in server.log(), server.log()[-2000:]
    finally:
        caller.close()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
