"""`proctor replay` on a known policy change, and `proctor audit show`."""

from __future__ import annotations

import json
from pathlib import Path

from proctor import engine
from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.writer import AuditWriter
from proctor.server.cli import main as cli_main
from tests.audit.helpers import run

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"

# topic, tags, count
TRAFFIC = [
    ("job.1.send.email", ["external"], 5),        # require_approval -> deny (escalated)
    ("job.2.read.pii", ["pii"], 4),               # require_approval -> allow (relaxed)
    ("job.3.delegate.internal", [], 6),           # allow, unchanged
    ("job.4.export.bulk", ["bulk-data"], 3),      # deny, unchanged
    ("job.5.unknown", [], 2),                     # default deny, unchanged
]


def _record_traffic(root: Path) -> None:
    policy = engine.load_policy(SEED)

    async def go() -> None:
        p = AuditWriter(FileSink(root), writer="w:replay")
        n = 0
        for topic, tags, count in TRAFFIC:
            for _ in range(count):
                req = engine.Request(topic=topic, risk_tags=tuple(tags),
                                     delegation_path=("planner", "worker"), tenant="acme",
                                     run_id="run-9", request_id=f"r{n}")
                d = policy.evaluate(req)
                await p.record("decision", {
                    "request_id": req.request_id, "run_id": req.run_id, "tenant": req.tenant,
                    "delegation_path": list(req.delegation_path), "topic": req.topic,
                    "risk_tags": list(req.risk_tags), "derived_tags": list(d.derived_tags),
                    "labels": {}, "outcome": d.decision, "rule_id": d.rule_id,
                    "reason": d.reason, "policy_version": d.policy_version,
                    "decision_id": f"dec-{n}", "approval_id": "", "latency_us": 30,
                })
                n += 1
        await p.record("policy_reload", {"outcome": "ok", "policy_version": "x"})
        await p.close()

    run(go)


def _candidate(tmp: Path) -> Path:
    text = SEED.read_text()
    text = text.replace(
        'decision: require_approval\n    reason: "External actions from any agent need approval"',
        'decision: deny\n    reason: "External actions are now blocked"')
    text = text.replace(
        'decision: require_approval\n    reason: "Customer data access requires review"',
        'decision: allow\n    reason: "Customer data access is fine now"')
    path = tmp / "candidate.yaml"
    path.write_text(text)
    return path


def test_replay_counts_a_known_change(tmp_path: Path, capsys) -> None:
    audit = tmp_path / "audit"
    _record_traffic(audit)
    cand = _candidate(tmp_path)
    assert cli_main(["replay", "--policy", str(cand), "--audit", str(audit), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["total"], res["escalated"], res["relaxed"], res["unchanged"]) == (20, 5, 4, 11)
    esc = [c for c in res["changes"] if c["change"] == "escalated"]
    assert {c["topic"] for c in esc} == {"job.1.send.email"}
    assert esc[0]["recorded"] == "require_approval" and esc[0]["candidate"] == "deny"
    assert cli_main(["replay", "--policy", str(SEED), "--audit", str(audit)]) == 0
    out = capsys.readouterr().out
    assert "0 escalated, 0 relaxed, 20 unchanged" in out
    assert cli_main(["replay", "--policy", str(cand), "--audit", str(audit)]) == 0
    out = capsys.readouterr().out
    assert "5 escalated, 4 relaxed, 11 unchanged" in out
    assert "ESCALATED dec-0 tenant=acme topic=job.1.send.email" in out


def test_show_prints_the_governance_envelope(tmp_path: Path, capsys) -> None:
    audit = tmp_path / "audit"
    _record_traffic(audit)
    assert cli_main(["audit", "show", "dec-0", "--audit-dir", str(audit)]) == 0
    out = capsys.readouterr().out
    assert "planner -> worker  (depth 1)" in out
    assert "job.1.send.email" in out and "approve-external-action" in out
    assert "require_approval" in out and "not created" in out
    assert cli_main(["audit", "show", "dec-0", "--audit-dir", str(audit), "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["run_id"] == "run-9" and env["acting_agent"] == "worker"
    assert cli_main(["audit", "show", "nope", "--audit-dir", str(audit)]) == 1


def test_tail_readable_and_json(tmp_path: Path, capsys) -> None:
    audit = tmp_path / "audit"
    _record_traffic(audit)
    assert cli_main(["audit", "tail", "--audit-dir", str(audit), "--decision", "deny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(" deny rule=" in ln for ln in lines)
    assert cli_main(["audit", "tail", "--audit-dir", str(audit), "--json",
                     "--kind", "policy_reload"]) == 0
    evs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["kind"] for e in evs] == ["policy_reload"] and evs[0]["seq"] == 21
