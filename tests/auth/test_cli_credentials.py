"""`proctor principals add|hash`, and the CLI and Python clients carrying credentials."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from proctor.client import ProctorClient, ProctorError
from proctor.server.auth import load_principals
from proctor.server.auth.tokens import hash_token
from tests.support.proctor import proctor_command, run_proctor, start_proctor

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"


def test_principals_hash_reads_stdin() -> None:
    out = subprocess.run([*proctor_command(), "principals", "hash"], input="s3cret\n",
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == hash_token("s3cret")


def test_principals_add_appends_and_prints_the_token_once(tmp_path: Path) -> None:
    f = tmp_path / "principals.yaml"
    f.write_text("# ours\nprincipals:\n  - id: ops\n    roles: [admin]\n")
    r = run_proctor("principals", "add", "bot", "--role", "agent", "--tenant", "acme",
                    "--agent", "planner", "--file", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    ps = load_principals(str(f))
    assert [p.id for p in ps.principals] == ["ops", "bot"]
    assert token not in f.read_text() and f.read_text().startswith("# ours")
    bad = run_proctor("principals", "add", "bot", "--role", "agent", "--tenant", "x",
                      "--agent", "y", "--file", str(f), cwd=tmp_path)
    assert bad.returncode == 2 and "listed twice" in bad.stderr


def test_clients_and_cli_send_the_token(tmp_path: Path) -> None:
    f = tmp_path / "principals.yaml"
    f.write_text(f"""principals:
  - id: bot
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{hash_token('tok-bot')}"]
  - id: rev
    roles: [reviewer]
    tenants: [acme]
    tokens: ["{hash_token('tok-rev')}"]
""")
    server = start_proctor(SEED_POLICY, tmp_path, "--principals", str(f))
    try:
        with ProctorClient(server.address, timeout=5) as anonymous:
            with pytest.raises(ProctorError) as e:
                anonymous.evaluate("job.1.delegate.internal", delegation_path=["a"])
            assert e.value.code.name == "UNAUTHENTICATED"
        with ProctorClient(server.address, timeout=5, token="tok-bot") as bot:
            d = bot.evaluate("job.1.send.email", delegation_path=["a"], risk_tags=["external"])
            assert d.approval_id
        (tmp_path / "rev.token").write_text("tok-rev\n")
        with ProctorClient(server.address, timeout=5,
                           token_file=tmp_path / "rev.token") as rev:
            with pytest.raises(ProctorError) as e:
                rev.evaluate("job.1.delegate.internal", delegation_path=["a"])
            assert e.value.code.name == "PERMISSION_DENIED"
        r = run_proctor("approvals", "list", "--server", server.address, "--json",
                        "--token-file", str(tmp_path / "rev.token"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert d.approval_id in r.stdout
        env = {**os.environ, "PROCTOR_TOKEN": "tok-rev"}
        r = subprocess.run([*proctor_command(), "approvals", "approve", d.approval_id,
                            "--server", server.address, "--reason", "fine"],
                           capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, r.stderr
        assert "by rev" in r.stdout
        r = run_proctor("approvals", "list", "--server", server.address, cwd=tmp_path)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr
    finally:
        assert server.stop() == 0, server.log()
