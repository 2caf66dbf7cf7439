"""The inbox inside a real `proctor serve --http-listen`: an approval created by a live
Evaluate over gRPC is read and resolved through the JSON API and the pages, the agent's
wait returns the resolution, the approved action is allowed once, the run's timeline shows
it, and SIGTERM stops both ports."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proctor.client import ProctorClient
from tests.inbox.helpers import SEED_POLICY
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, start_proctor

PATH = ["orchestrator", "agent-b", "agent-c"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    http_port = free_port()
    p = start_proctor(SEED_POLICY, tmp_path_factory.mktemp("inbox"),
                      "--http-listen", f"127.0.0.1:{http_port}")
    p.http_port = http_port  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


@pytest.fixture(scope="module")
def http(server: ProctorProcess) -> Iterator[httpx.Client]:
    url = f"http://127.0.0.1:{server.http_port}"  # type: ignore[attr-defined]
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def client(server: ProctorProcess) -> Iterator[ProctorClient]:
    with ProctorClient(server.address, timeout=10.0) as c:
        yield c


def send_emails(client: ProctorClient, run_id: str, **kw: Any) -> Any:
    return client.evaluate("job.42.send.email", delegation_path=PATH, tenant="acme",
                           run_id=run_id, risk_tags=["external", "pii"],
                           labels={"data": "customer-emails"}, **kw)


def eventually(probe: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_approve_through_the_api_unlocks_the_action(
    client: ProctorClient, http: httpx.Client
) -> None:
    d = send_emails(client, "run-api")
    assert d.decision == "require_approval" and d.approval_id
    listed = http.get("/api/v1/approvals", params={"state": "pending"}).json()["approvals"]
    mine = [a for a in listed if a["approval_id"] == d.approval_id]
    assert mine and mine[0]["delegation_path"] == PATH

    page = http.get(f"/approvals/{d.approval_id}")
    assert page.status_code == 200
    assert d.approval_id in page.text and all(agent in page.text for agent in PATH)
    assert "Development mode" in page.text

    waited: list[Any] = []
    waiter = threading.Thread(target=lambda: waited.append(
        client.wait_for_approval(d.approval_id, timeout=30)))
    waiter.start()
    r = http.post(f"/api/v1/approvals/{d.approval_id}/resolve",
                  json={"approve": True, "reason": "checked the processor list"})
    assert r.status_code == 200, r.text
    waiter.join(30)
    assert waited and waited[0].status == "approved"
    assert waited[0].resolution_reason == "checked the processor list"

    again = send_emails(client, "run-api", approval_id=d.approval_id)
    assert again.decision == "allow"
    once_more = send_emails(client, "run-api", approval_id=d.approval_id)
    assert once_more.decision == "require_approval"

    def timeline() -> Any:
        body = http.get("/api/v1/runs/run-api").json()
        return body if len(body["decisions"]) >= 3 else None

    body = eventually(timeline)
    assert body, http.get("/api/v1/runs/run-api").text
    decisions = [x["decision"] for x in body["decisions"]]
    assert decisions[:3] == ["require_approval", "allow", "require_approval"]
    first = body["decisions"][0]
    assert first["delegation_path"] == PATH
    assert first["approval"]["status"] == "consumed"
    assert first["approval"]["reviewer"] == "anonymous"
    run_page = http.get("/runs/run-api").text
    assert "orchestrator" in run_page and f"/decisions/{first['decision_id']}" in run_page
    env = http.get(f"/decisions/{first['decision_id']}")
    assert env.status_code == 200 and d.approval_id in env.text


def test_deny_through_the_form(client: ProctorClient, http: httpx.Client) -> None:
    d = send_emails(client, "run-form", request_id="form-1")
    page = http.get(f"/approvals/{d.approval_id}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf and "proctor_csrf" in http.cookies
    assert 'name="reviewer"' not in page.text
    # no CSRF token: refused, nothing resolved
    r = http.post(f"/approvals/{d.approval_id}/resolve",
                  data={"decision": "deny", "reason": "no"})
    assert r.status_code == 403
    assert client.get_approval(d.approval_id).status == "pending"
    r = http.post(f"/approvals/{d.approval_id}/resolve",
                  data={"decision": "deny", "reason": "<b>not</b> today", "csrf": csrf[1]})
    assert r.status_code == 303
    shown = http.get(r.headers["location"]).text
    assert "&lt;b&gt;not&lt;/b&gt; today" in shown and "<b>not</b>" not in shown
    state = client.get_approval(d.approval_id)
    assert (state.status, state.reviewer) == ("denied", "anonymous")
    resolved = http.get("/approvals/resolved").text
    assert d.approval_id in resolved


def test_pages_and_events(server: ProctorProcess, http: httpx.Client,
                          client: ProctorClient) -> None:
    assert "Pending approvals" in http.get("/approvals").text
    policy = http.get("/policy")
    assert policy.status_code == 200 and "Serving version" in policy.text
    css = http.get("/static/inbox.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert "default-src 'none'" in http.get("/approvals").headers["content-security-policy"]
    assert http.get("/nowhere").status_code == 404

    seen: list[str] = []
    with http.stream("GET", "/events") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        d = send_emails(client, "run-events")
        for line in lines:
            if line.startswith("data:"):
                seen.append(line)
                if d.approval_id in line:
                    break
    assert any(f"created {d.approval_id}" in s for s in seen)
    fragment = http.get("/fragments/pending").text
    assert d.approval_id in fragment
