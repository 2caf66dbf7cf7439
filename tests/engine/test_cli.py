"""proctor check | test | eval, in process and (eval) as a real subprocess."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from proctor.server import policy_cli
from tests.engine.generators import random_policy, random_request
from tests.engine.reference import reference_decide

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="proctor")
    sub = parser.add_subparsers(dest="command", required=True)
    policy_cli.register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- check -------------------------------------------------------------------------------------


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(SEED)]) == 0
    out = capsys.readouterr().out
    assert "ok (4 rules" in out


def test_check_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", "version: v1\nrules:\n  - id: x\n    match: {topics: [a]}\n")
    assert run(["check", str(SEED), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:3: rule 'x': missing required key 'decision'" in out
    assert "safety.yaml: ok" in out


def test_check_warnings_alone_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dup = write(
        tmp_path,
        "dup.yaml",
        "version: v1\nrules:\n"
        "  - id: a\n    match: {topics: [x]}\n    decision: allow\n"
        "  - id: b\n    match: {topics: [x]}\n    decision: allow\n",
    )
    assert run(["check", str(dup)]) == 0
    out = capsys.readouterr().out
    assert f"{dup}:6: rule 'b': warning: can never decide" in out
    assert "1 warnings" in out


# -- test --------------------------------------------------------------------------------------


def test_test_seed_suite_by_default_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["test", str(SEED)]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_test_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write(
        tmp_path,
        "s.tests.yaml",
        """\
tests:
  - name: wrong on purpose
    request: {topic: job.1.export.bulk, delegation_path: [a], risk_tags: [bulk-data]}
    expect: {decision: allow, rule_id: nope}
  - name: right
    request: {topic: job.1.export.bulk, delegation_path: [a], risk_tags: [bulk-data]}
    expect: {decision: deny, rule_id: deny-bulk-export, matched_rule_ids: [deny-bulk-export]}
""",
    )
    assert run(["test", str(SEED), str(suite)]) == 1
    out = capsys.readouterr().out
    assert f"{suite}:2: FAIL wrong on purpose" in out
    assert "decision: expected allow, got deny" in out
    assert "rule_id: expected nope, got deny-bulk-export" in out
    assert "1 passed, 1 failed" in out


@pytest.mark.parametrize(
    ("suite", "fragment"),
    [
        ("tests:\n  - request: {topic: a}\n    expect: {decision: allow}\n", "bad request"),
        (
            "tests:\n  - request: {topic: a, delegation_path: [x]}\n    expect: {decision: ok}\n",
            "expect.decision",
        ),
        (
            "tests:\n  - request: {topic: a, delegation_path: [x]}\n    expected: {}\n",
            "unknown key 'expected'",
        ),
        ("oops: 1\n", "expected a mapping with one key"),
    ],
)
def test_test_malformed_suite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suite: str, fragment: str
) -> None:
    path = write(tmp_path, "m.tests.yaml", suite)
    assert run(["test", str(SEED), str(path)]) == 1
    assert fragment in capsys.readouterr().err


def test_test_missing_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(tmp_path, "p.yaml", SEED.read_text())
    assert run(["test", str(policy)]) == 1
    assert "p.tests.yaml: cannot read" in capsys.readouterr().err


# -- eval --------------------------------------------------------------------------------------

KEYS = ["decision", "rule_id", "reason", "policy_version", "matched_rule_ids"]


def test_eval_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [
        {"topic": "job.1.export.bulk", "risk_tags": ["bulk-data"], "delegation_path": ["a"]},
        {},
        {
            "topic": "job.1.read.pii",
            "risk_tags": ["PII"],
            "delegation_path": ["a", "b"],
            "explain": True,
            "request_id": "q",
            "run_id": "r",
            "tenant": "t",
            "labels": {"k": "v"},
            "approval_id": "",
        },
    ]
    text = "\n".join("" if not obj else json.dumps(obj) for obj in lines) + "\n"
    path = write(tmp_path, "in.jsonl", text)
    assert run(["eval", "--policy", str(SEED), "--input", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert [list(o) for o in out] == [KEYS, KEYS]
    assert out[0]["rule_id"] == "deny-bulk-export" and out[0]["matched_rule_ids"] == []
    assert out[1]["matched_rule_ids"] == ["approve-data-access"]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"topic": "a", "delegation_path": ["x"], "colour": 1}', "unknown field 'colour'"),
        ('{"topic": "a..b", "delegation_path": ["x"]}', "topic: segment 2 is empty"),
        ('{"topic": "a", "delegation_path": []}', "delegation_path: at least 1 agent"),
        ('{"delegation_path": ["x"]}', "topic: required"),
        ('["topic"]', "expected a JSON object"),
        ('{"topic": "a", "delegation_path": ["x"], "explain": "yes"}', "explain"),
    ],
)
def test_eval_malformed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, fragment: str
) -> None:
    good = '{"topic": "job.1.read.pii", "delegation_path": ["a"]}'
    path = write(tmp_path, "in.jsonl", good + "\n" + line + "\n" + good + "\n")
    assert run(["eval", "--policy", str(SEED), "--input", str(path)]) != 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert f"{path}:2: " in captured.err and fragment in captured.err


def test_eval_bad_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, "bad.yaml", "version: v9\n")
    assert run(["eval", "--policy", str(bad), "--input", str(bad)]) != 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"{bad}:1: version must be v1" in captured.err


def test_eval_explain_subprocess_agrees_with_reference(tmp_path: Path) -> None:
    """The real console entry point, on a random policy using every feature."""
    r = random.Random(2026)
    policy = random_policy(r, 60)
    policy["derive_tags"] = [{"topics": ["job.**"], "add": ["job-tag"]}]
    policy_path = write(tmp_path, "corpus.yaml", yaml.safe_dump(policy, sort_keys=False))
    requests = [random_request(r, policy) for _ in range(400)]
    proc = subprocess.run(
        [sys.executable, "-m", "proctor.server.cli", "eval", "--policy", str(policy_path),
         "--explain"],
        input="\n".join(json.dumps(q) for q in requests) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(requests)
    for q, got in zip(requests, answers, strict=True):
        want = reference_decide(policy, q)
        assert list(got) == KEYS
        assert (got["decision"], got["rule_id"], got["matched_rule_ids"]) == (
            want["decision"],
            want["rule_id"],
            want["matched_rule_ids"],
        ), q
