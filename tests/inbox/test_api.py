"""The JSON API under /api/v1/: list, get, resolve, resolving twice, unknown ids, tenants,
roles, and errors as JSON."""

from __future__ import annotations

from pathlib import Path

from tests.inbox.helpers import TOKENS, Env, bearer, run

JSON = {"content-type": "application/json"}


def test_list_get_resolve_in_development_mode(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        a = await env.create(path=("orchestrator", "agent-b", "agent-c"))
        r = await env.client.get("/api/v1/approvals?state=pending")
        assert r.status_code == 200
        [item] = r.json()["approvals"]
        assert item["approval_id"] == a.approval_id
        assert item["delegation_path"] == ["orchestrator", "agent-b", "agent-c"]
        assert item["status"] == "pending" and item["url"] == f"/approvals/{a.approval_id}"

        r = await env.client.get(f"/api/v1/approvals/{a.approval_id}")
        assert r.status_code == 200 and r.json()["rule_id"] == "approve-external-action"

        r = await env.client.post(f"/api/v1/approvals/{a.approval_id}/resolve",
                                  json={"approve": False, "reason": "not this week"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "denied" and body["reviewer"] == "anonymous"
        assert body["resolution_reason"] == "not this week"
        assert ("denied", a.approval_id) in env.steps
        assert [f["op"] for k, f in env.audit.events if k == "approval"] == ["denied"]

        r = await env.client.get("/api/v1/approvals?state=pending")
        assert r.json()["approvals"] == []
        r = await env.client.get("/api/v1/approvals?state=resolved")
        assert [x["approval_id"] for x in r.json()["approvals"]] == [a.approval_id]

        # twice: 409 FAILED_PRECONDITION
        r = await env.client.post(f"/api/v1/approvals/{a.approval_id}/resolve",
                                  json={"approve": True, "reason": ""})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "FAILED_PRECONDITION"

    run(scenario, tmp_path)


def test_errors_are_json(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        r = await env.client.get("/api/v1/approvals/apv_nope")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        r = await env.client.post("/api/v1/approvals/apv_nope/resolve",
                                  json={"approve": True, "reason": ""})
        assert r.status_code == 404
        r = await env.client.get("/api/v1/approvals?state=weird")
        assert r.status_code == 400 and "state" in r.json()["error"]["message"]
        r = await env.client.get("/api/v1/approvals?limit=x")
        assert r.status_code == 400
        a = await env.create()
        path = f"/api/v1/approvals/{a.approval_id}/resolve"
        r = await env.client.post(path, json={"approve": "yes"})
        assert r.status_code == 400 and "approve" in r.json()["error"]["message"]
        r = await env.client.post(path, json={"approve": False, "reason": " "})
        assert r.status_code == 400 and "reason" in r.json()["error"]["message"]
        r = await env.client.post(path, content=b"{", headers=JSON)
        assert r.status_code == 400
        # a form post (what a cross-site page could send) is refused
        r = await env.client.post(path, data={"approve": "true"})
        assert r.status_code == 415
        r = await env.client.post(path, json={"approve": True},
                                  headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        r = await env.client.get("/api/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
        assert (await env.client.get(f"/api/v1/approvals/{a.approval_id}")).json()[
            "status"] == "pending"

    run(scenario, tmp_path)


def test_tenants_roles_and_reviewer_identity(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        acme = await env.create(tenant="acme")
        globex = await env.create(tenant="globex")
        other_group = await env.create(tenant="acme", approvers=("legal",))

        r = await env.client.get("/api/v1/approvals")
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHENTICATED"
        r = await env.client.get("/api/v1/approvals", headers=bearer("wrong"))
        assert r.status_code == 401
        r = await env.client.get("/api/v1/approvals", headers=bearer("tok-bot"))
        assert r.status_code == 403 and "reviewer" in r.json()["error"]["message"]

        r = await env.client.get("/api/v1/approvals", headers=bearer("tok-dana"))
        assert [x["approval_id"] for x in r.json()["approvals"]] == [acme.approval_id]
        r = await env.client.get("/api/v1/approvals", headers=bearer("tok-erin"))
        assert [x["approval_id"] for x in r.json()["approvals"]] == [globex.approval_id]
        # another tenant's (or group's) approval does not exist for this reviewer
        for hidden in (globex, other_group):
            r = await env.client.get(f"/api/v1/approvals/{hidden.approval_id}",
                                     headers=bearer("tok-dana"))
            assert r.status_code == 404
            r = await env.client.post(f"/api/v1/approvals/{hidden.approval_id}/resolve",
                                      json={"approve": True}, headers=bearer("tok-dana"))
            assert r.status_code == 404

        # the reviewer recorded is the principal; a "reviewer" field is not read
        r = await env.client.post(f"/api/v1/approvals/{acme.approval_id}/resolve",
                                  json={"approve": True, "reason": "ok", "reviewer": "mallory"},
                                  headers=bearer("tok-dana"))
        assert r.status_code == 200 and r.json()["reviewer"] == "dana"

    run(scenario, tmp_path, tokens=TOKENS)


def test_policy(tmp_path: Path) -> None:
    async def scenario(env: Env) -> None:
        r = await env.client.get("/api/v1/policy")
        body = r.json()
        assert r.status_code == 200 and body["policy_version"] and body["rules"] > 0
        assert body["last_reload_error"] == ""

    run(scenario, tmp_path)
