"""The local spool alone: order, bounds, rotation, acknowledgement and adoption."""

from __future__ import annotations

import random
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
