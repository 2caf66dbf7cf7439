"""Reviewers log in to a real `proctor serve --principals --http-listen`: the login form, the
HttpOnly SameSite=Strict session cookie, CSRF on every form, bearer tokens for the API,
roles and tenants."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from proctor.server.auth.tokens import hash_token
from proctor.v1 import approvals_pb2, approvals_pb2_grpc, decisions_pb2, decisions_pb2_grpc
from tests.inbox.helpers import SEED_POLICY
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, start_proctor

PATH = ["orchestrator", "agent-b", "agent-c"]
PRINCIPALS = f"""\
principals:
  - id: planner-bot
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{hash_token('bot-token')}"]
  - id: dana
    roles: [reviewer]
    tenants: [acme]
    groups: [data-governance]
    tokens: ["{hash_token('dana-token')}"]
  - id: sam
    roles: [agent, reviewer]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{hash_token('sam-token')}"]
  - id: erin
    roles: [reviewer]
    tenants: [globex]
    groups: [data-governance]
    tokens: ["{hash_token('erin-token')}"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    workdir = tmp_path_factory.mktemp("login")
    (workdir / "principals.yaml").write_text(PRINCIPALS)
    http_port = free_port()
    p = start_proctor(SEED_POLICY, workdir / "proctor", "--principals",
                      str(workdir / "principals.yaml"), "--http-listen",
                      f"127.0.0.1:{http_port}")
    p.http_url = f"http://127.0.0.1:{http_port}"  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


def browser(server: ProctorProcess) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=10)  # type: ignore[attr-defined]


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found[1]


def log_in(b: httpx.Client, token: str, next_page: str = "/approvals") -> httpx.Response:
    form = b.get("/login", params={"next": next_page})
    return b.post("/login", data={"token": token, "csrf": csrf_of(form.text),
                                  "next": next_page})


BOT = [("authorization", "Bearer bot-token")]


def ask(server: ProctorProcess, run_id: str, token: str = "bot-token") -> Any:
    """An agent's Evaluate over raw gRPC, as the principal of `token`."""
    with grpc.insecure_channel(server.address) as ch:
        req = decisions_pb2.EvaluateRequest(
            topic="job.42.send.email", delegation_path=PATH, tenant="acme", run_id=run_id,
            risk_tags=["external", "pii"])
        return decisions_pb2_grpc.DecisionsStub(ch).Evaluate(
            req, metadata=[("authorization", f"Bearer {token}")], timeout=10)


def approval_state(server: ProctorProcess, approval_id: str) -> Any:
    with grpc.insecure_channel(server.address) as ch:
        return approvals_pb2_grpc.ApprovalsStub(ch).GetApproval(
            approvals_pb2.GetApprovalRequest(approval_id=approval_id), metadata=BOT,
            timeout=10)


def test_login_cookie_and_logout(server: ProctorProcess) -> None:
    d = ask(server, "run-login")
    assert d.approval_id
    with browser(server) as b:
        r = b.get(f"/approvals/{d.approval_id}")
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert "Development mode" not in b.get("/login").text

        bad = log_in(b, "not-a-token")
        assert bad.status_code == 401 and "not valid" in bad.text
        agent = log_in(b, "bot-token")
        assert agent.status_code == 403 and "reviewer" in agent.text
        # a login form posted without the CSRF value (or from another site) is refused
        r = b.post("/login", data={"token": "dana-token", "next": "/approvals"})
        assert r.status_code == 403

        r = log_in(b, "dana-token", f"/approvals/{d.approval_id}")
        assert r.status_code == 303 and r.headers["location"] == f"/approvals/{d.approval_id}"
        cookie = next(v for k, v in r.headers.multi_items()
                      if k == "set-cookie" and v.startswith("proctor_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        page = b.get(f"/approvals/{d.approval_id}")
        assert page.status_code == 200 and "dana" in page.text
        assert all(agent in page.text for agent in PATH)

        # an open redirect through ?next= is not possible
        assert log_in(b, "dana-token", "//evil.example/").headers["location"] == "/approvals"

        r = b.post(f"/approvals/{d.approval_id}/resolve",
                   data={"decision": "approve", "reason": "fine", "csrf": csrf_of(page.text)})
        assert r.status_code == 303
        state = approval_state(server, d.approval_id)
        assert state.status == approvals_pb2.APPROVAL_STATUS_APPROVED
        assert state.reviewer == "dana"

        r = b.post("/logout", data={"csrf": csrf_of(b.get("/approvals").text)})
        assert r.status_code == 303
        assert b.get("/approvals").status_code == 303


def test_api_bearer_tokens_roles_and_tenants(server: ProctorProcess) -> None:
    d = ask(server, "run-api-auth")
    with browser(server) as b:
        assert b.get("/api/v1/approvals").status_code == 401
        dana = {"authorization": "Bearer dana-token"}
        erin = {"authorization": "Bearer erin-token"}
        bot = {"authorization": "Bearer bot-token"}
        assert b.get("/api/v1/approvals", headers=bot).status_code == 403
        ids = [a["approval_id"] for a in
               b.get("/api/v1/approvals", headers=dana).json()["approvals"]]
        assert d.approval_id in ids
        assert b.get("/api/v1/approvals", headers=erin).json()["approvals"] == []
        r = b.get(f"/api/v1/approvals/{d.approval_id}", headers=erin)
        assert r.status_code == 404
        r = b.post(f"/api/v1/approvals/{d.approval_id}/resolve", headers=erin,
                   json={"approve": True})
        assert r.status_code == 404
        r = b.post(f"/api/v1/approvals/{d.approval_id}/resolve", headers=dana,
                   json={"approve": False, "reason": "no"})
        assert r.status_code == 200 and r.json()["reviewer"] == "dana"
        assert b.get("/api/v1/runs/run-api-auth", headers=erin).json()["decisions"] == []


def test_the_inbox_off_loopback_needs_principals_and_tls(tmp_path: Path) -> None:
    from tests.support.proctor import run_proctor

    base = ("serve", "--policy", str(SEED_POLICY), "--http-listen", "0.0.0.0:0")
    r = run_proctor(*base, cwd=tmp_path)
    assert r.returncode == 2 and "loopback only" in r.stderr
    (tmp_path / "p.yaml").write_text(PRINCIPALS)
    r = run_proctor(*base, "--principals", str(tmp_path / "p.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "need TLS" in r.stderr


def test_no_self_approval_in_the_inbox(server: ProctorProcess) -> None:
    d = ask(server, "run-self", token="sam-token")
    with browser(server) as b:
        sam = {"authorization": "Bearer sam-token"}
        item = b.get(f"/api/v1/approvals/{d.approval_id}", headers=sam).json()
        assert item["requested_by"] == "sam"
        r = b.post(f"/api/v1/approvals/{d.approval_id}/resolve", headers=sam,
                   json={"approve": True, "reason": "mine"})
        assert r.status_code == 403 and "self approval" in r.json()["error"]["message"]
        assert log_in(b, "sam-token").status_code == 303
        page = b.get(f"/approvals/{d.approval_id}")
        assert "Requested by" in page.text
        r = b.post(f"/approvals/{d.approval_id}/resolve",
                   data={"decision": "approve", "reason": "", "csrf": csrf_of(page.text)})
        assert r.status_code == 403 and "self approval" in r.text
        assert approval_state(server, d.approval_id).status == \
            approvals_pb2.APPROVAL_STATUS_PENDING
