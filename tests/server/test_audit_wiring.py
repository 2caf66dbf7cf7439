"""Every decision reaches the audit with its request fields, outcome and ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

from proctor.client import EvaluationRequest, ProctorClient
from tests.support.proctor import start_proctor

from .conftest import SEED_POLICY


def _decision_events(audit_dir: Path) -> list[dict[str, object]]:
    events = []
    for path in sorted(audit_dir.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                if event.get("kind") == "decision":
                    events.append(event)
    return events


def test_sync_durability_batch_is_on_disk_in_order_when_answered(tmp_path: Path) -> None:
    server = start_proctor(SEED_POLICY, tmp_path, "--audit-durability", "sync")
    try:
        with ProctorClient(server.address, timeout=30) as c:
            one = c.evaluate(
                "job.5.send.email", delegation_path=["planner", "mailer"],
                risk_tags=["External"], tenant="acme", run_id="r-1", request_id="q-1",
                labels={"env": "prod"},
            )
            t0 = time.monotonic()
            batch = c.evaluate_batch(
                [EvaluationRequest(f"job.{i}.delegate.internal", delegation_path=["a"])
                 for i in range(300)]
            )
            elapsed = time.monotonic() - t0
        # Answered only once on disk: the events are there without waiting or stopping.
        events = _decision_events(tmp_path / "audit")
    finally:
        assert server.stop() == 0, server.log()
    assert elapsed < 10, "a sync batch should share group commits"
    first = events[0]
    assert first["decision_id"] == one.decision_id
    assert (first["outcome"], first["rule_id"], first["tenant"]) == (
        "require_approval", "approve-external-action", "acme",
    )
    assert first["delegation_path"] == ["planner", "mailer"]
    assert first["risk_tags"] == ["external"]
    assert first["labels"] == {"env": "prod"}
    assert (first["run_id"], first["request_id"]) == ("r-1", "q-1")
    assert first["policy_version"] == one.policy_version
    assert isinstance(first["latency_us"], int)
    ids = [e["decision_id"] for e in events[1:]]
    assert ids == [r.decision_id for r in batch]  # type: ignore[union-attr]
