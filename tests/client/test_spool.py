"""The local spool alone: order, bounds, rotation, acknowledgement and adoption."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.client import spool as spool_module
from proctor.client.spool import adopt_orphans, open_spool


def test_records_come_back_in_order_across_segments_byte_bounds_and_acks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(spool_module, "ROTATE_BYTES", 5000)
    s = open_spool(tmp_path, "k")
    rng = random.Random(1)
    got: list[int] = []
    n = 0
    for _ in range(200):
        for _ in range(rng.randint(0, 50)):
            assert s.append(("x" * rng.randint(1, 300), n))
            n += 1
        records, position = s.read(rng.randint(1, 40), rng.randint(100, 3000))
        got += [r[1] for r in records]
        if rng.random() < 0.7:
            s.ack(position)
    while True:
        records, position = s.read(100, 2000)
        if not records:
            break
        got += [r[1] for r in records]
        s.ack(position)
    assert got == list(range(n))
    assert s.backlog == 0 and not s.pending
    assert len([p for p in s.folder.iterdir() if p.name.isdigit()]) == 1  # acked ones deleted
    s.close(remove=True)
    assert not s.folder.exists()


def test_the_bound_refuses_and_an_ack_makes_room(tmp_path: Path) -> None:
    s = open_spool(tmp_path, "k", max_bytes=1000)
    taken = 0
    while s.append(("y" * 50,)):
        taken += 1
    assert 5 < taken < 20 and s.backlog <= 1000
    records, position = s.read(1000)
    assert len(records) == taken
    s.ack(position)
    assert s.append(("y" * 50,))
    s.close()


def test_a_closed_spool_with_records_left_is_adopted_and_read_from_the_ack(
    tmp_path: Path,
) -> None:
    s = open_spool(tmp_path, "k")
    for i in range(10):
        s.append((i,))
    _, position = s.read(4)
    s.ack(position)
    assert adopt_orphans(tmp_path, "k") == []  # its owner still holds it
    s.close()
    [orphan] = adopt_orphans(tmp_path, "k")
    records, _ = orphan.read(100)
    assert [r[0] for r in records] == list(range(4, 10))
    assert adopt_orphans(tmp_path, "k") == []  # one adopter at a time
    orphan.close(remove=True)
    assert adopt_orphans(tmp_path, "k") == []


def test_a_record_larger_than_a_read_s_byte_budget_still_comes_back(tmp_path: Path) -> None:
    s = open_spool(tmp_path, "k")
    assert s.append(("small",)) and s.append(("z" * 5000,)) and s.append(("after",))
    got = []
    while True:
        records, position = s.read(10, 100)
        if not records:
            break
        got += [r[0] for r in records]
        s.ack(position)
    assert got == ["small", "z" * 5000, "after"] and not s.pending
    s.close(remove=True)


def test_a_killed_owner_s_records_are_all_adopted(tmp_path: Path) -> None:
    # The records are stored into a shared map, not written: SIGKILL must not lose them.
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from proctor.client.spool import open_spool\n"
        "s = open_spool(Path(sys.argv[1]), 'k')\n"
        "for i in range(2000):\n"
        "    assert s.append((i, 'x' * 100))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert proc.returncode == -signal.SIGKILL
    [orphan] = adopt_orphans(tmp_path, "k")
    got = []
    while True:
        records, position = orphan.read(500)
        if not records:
            break
        got += [r[0] for r in records]
        orphan.ack(position)
    assert got == list(range(2000))
    orphan.close(remove=True)
