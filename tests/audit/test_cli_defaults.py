"""The audit CLI on first try: `proctor audit verify|show|tail` and `proctor replay` read
./proctor-audit, where `proctor serve` writes by default, with no flags (issue 18)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc

from proctor.server.audit import cli as audit_cli
from proctor.server.settings import DEFAULT_AUDIT_DIR, add_arguments
from proctor.v1 import decisions_pb2, decisions_pb2_grpc
from tests.support.proctor import run_proctor, start_proctor

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
SEED_KEYS = ["run_id", "delegation_path", "action", "decision", "policy_version", "approval"]


def test_serve_and_the_audit_commands_share_one_default() -> None:
    assert DEFAULT_AUDIT_DIR == "./proctor-audit"
    serve = argparse.ArgumentParser()
    add_arguments(serve)
    assert serve.parse_args(["--policy", str(SEED)]).audit_dir == DEFAULT_AUDIT_DIR
    assert audit_cli.DEFAULT_AUDIT_DIR == DEFAULT_AUDIT_DIR


def _evaluate(address: str) -> list[decisions_pb2.EvaluateResponse]:
    with grpc.insecure_channel(address) as ch:
        stub = decisions_pb2_grpc.DecisionsStub(ch)
        ids = []
        for i, (run, topic, tags) in enumerate([
            ("run-a", "job.1.send.email", ["external"]),
            ("run-b", "job.2.export.bulk", ["bulk-data"]),
            ("run-a", "job.3.read.public", []),
        ]):
            ids.append(stub.Evaluate(decisions_pb2.EvaluateRequest(
                request_id=f"r-{i}", run_id=run, tenant="acme", topic=topic, risk_tags=tags,
                delegation_path=["planner", "worker"]), timeout=10))
        return ids


def test_the_audit_commands_work_with_no_flags_after_a_served_run(tmp_path: Path) -> None:
    # Where serve writes when given no --audit-dir (relative to its working directory).
    srv = start_proctor(SEED, tmp_path, "--audit-dir", DEFAULT_AUDIT_DIR)
    try:
        answers = _evaluate(srv.address)
        approval = answers[0].approval_id
        done = run_proctor("approvals", "deny", approval, "--reviewer", "dana", "--reason",
                           "no ticket for this", "--server", srv.address, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        assert srv.stop() == 0, srv.log()
    assert (tmp_path / "proctor-audit").is_dir()
    ids = [a.decision_id for a in answers]

    done = run_proctor("audit", "verify", cwd=tmp_path)
    assert done.returncode == 0 and "OK: " in done.stdout, done.stdout + done.stderr

    done = run_proctor("audit", "show", ids[0], "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)
    assert list(env)[: len(SEED_KEYS)] == SEED_KEYS
    assert list(env["approval"])[:3] == ["status", "reviewer", "reason"]
    assert env["run_id"] == "run-a" and env["action"] == "job.1.send.email"
    assert env["decision"] == "require_approval"
    assert {k: env["approval"][k] for k in ("status", "reviewer", "reason")} == {
        "status": "denied", "reviewer": "dana", "reason": "no ticket for this"}
    assert env["delegation_path"] == ["planner", "worker"] and env["policy_version"]
    assert env["rule_id"] == "approve-external-action" and env["acting_agent"] == "worker"

    done = run_proctor("audit", "show", ids[0], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 1) for line in done.stdout.splitlines()]
    assert [r[0] for r in rows[:7]] == [*SEED_KEYS, "rule"], done.stdout
    assert rows[5][1] == f"{approval} denied by dana: no ticket for this", done.stdout
    done = run_proctor("audit", "show", ids[1], cwd=tmp_path)
    assert done.returncode == 0 and "deny-bulk-export" in done.stdout, done.stderr

    done = run_proctor("audit", "tail", "--run-id", "run-a", "--json", "--kind", "decision",
                       cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    evs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["decision_id"] for e in evs] == [ids[0], ids[2]]

    for flags in ([], ["--audit-dir", DEFAULT_AUDIT_DIR], ["--audit", DEFAULT_AUDIT_DIR]):
        done = run_proctor("replay", "--policy", str(SEED), *flags, cwd=tmp_path)
        assert done.returncode == 0 and "3 unchanged" in done.stdout, done.stdout + done.stderr


def test_no_audit_directory_says_what_to_give(tmp_path: Path) -> None:
    for args in (["audit", "verify"], ["audit", "show", "x"], ["audit", "tail"],
                 ["replay", "--policy", str(SEED)]):
        done = run_proctor(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "no audit directory at ./proctor-audit" in done.stderr
        assert "--audit-dir DIR" in done.stderr and "Traceback" not in done.stderr
