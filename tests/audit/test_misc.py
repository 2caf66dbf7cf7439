"""Smaller contracts: any edit breaks verify, metrics export, thread-safe record, tail --follow."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from proctor.server.audit import build_audit, metrics
from proctor.server.audit.event import seal
from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.verify import verify
from proctor.server.audit.writer import AuditWriter
from tests.audit.helpers import decision, run

ROOT = Path(__file__).resolve().parents[2]


def _chain(n: int) -> list[bytes]:
    out, prev = [], ""
    for i in range(1, n + 1):
        rec = {**decision(i), "seq": i, "writer": "w", "kind": "decision", "prev_hash": prev,
               "event_id": f"e{i}", "time": "2026-01-01T00:00:00.000000Z"}
        line, prev = seal(rec, b"k")
        out.append(line)
    return out


def _check(lines: list[bytes]):
    return verify(((f"f:{i}", ln, False) for i, ln in enumerate(lines, 1)), b"k")


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 11), st.sampled_from(["outcome", "topic", "tenant", "seq", "prev_hash",
                                            "rule_id", "labels", "time"]), st.text(max_size=5))
def test_any_edit_of_any_event_is_caught(idx: int, field: str, value: str) -> None:
    lines = _chain(12)
    assert _check(lines).ok
    ev = json.loads(lines[idx])
    new = value if field != "seq" else ev["seq"] + 100
    if ev.get(field) == new:
        return
    ev[field] = new
    lines[idx] = json.dumps(ev).encode() + b"\n"
    rep = _check(lines)
    assert not rep.ok
    assert any(e.startswith(f"f:{idx + 1}:") for e in rep.errors)


def test_reordered_events_are_caught() -> None:
    lines = _chain(6)
    lines[2], lines[3] = lines[3], lines[2]
    assert _check(lines).ok  # the chain is ordered by seq, not by position...
    a, b = json.loads(lines[2]), json.loads(lines[3])
    a["seq"], b["seq"] = b["seq"], a["seq"]  # ...so swapping seqs breaks the hashes
    rep = _check([*lines[:2], json.dumps(a).encode() + b"\n", json.dumps(b).encode() + b"\n",
                  *lines[4:]])
    assert not rep.ok


def test_metrics_are_exported_on_the_servers_registry(tmp_path: Path) -> None:
    reg = CollectorRegistry()
    metrics.register(reg)
    metrics.register(reg)  # idempotent

    async def go() -> None:
        p = AuditWriter(FileSink(tmp_path), writer="m")
        for i in range(5):
            await p.record("decision", decision(i))
        await p.close()

    run(go)
    text = generate_latest(reg).decode()
    assert 'proctor_audit_events_written_total{sink="file"}' in text
    assert "proctor_audit_shed_total" in text and "proctor_audit_queue_depth" in text


def test_build_audit_from_settings(tmp_path: Path) -> None:
    class S:
        audit = "file"
        audit_dir = str(tmp_path)
        audit_durability = "sync"
        audit_queue_policy = "shed"
        audit_queue_size = 10
        audit_hmac_key_file = ""

    p = build_audit(S(), "host:1:2")
    assert isinstance(p, AuditWriter) and p.writer == "host:1:2"
    S.audit = "off"
    with pytest.raises(ValueError, match="use file or redis"):
        build_audit(S())


def test_tail_follow_prints_new_events(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proctor.server.cli", "audit", "tail", "--audit-dir", str(tmp_path),
         "--follow", "--json"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)

        async def go() -> None:
            p = AuditWriter(FileSink(tmp_path), writer="f")
            for i in range(3):
                await p.record("decision", decision(i))
            await p.close()

        run(go)
        assert proc.stdout is not None
        got = [json.loads(proc.stdout.readline())["decision_id"] for _ in range(3)]
        assert got == ["d-0", "d-1", "d-2"]
    finally:
        proc.terminate()
        proc.wait(10)
