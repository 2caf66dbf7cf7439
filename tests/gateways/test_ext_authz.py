"""Envoy ext_authz: `envoy.service.auth.v3.Authorization/Check` on a live `proctor serve`.

A real gRPC client built from the xds-protos stubs plays Envoy's ext_authz
filter: CheckRequests carry the HTTP method, path and headers as Envoy sends
them, and each answer is read as Envoy would (status, denied response, headers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from hypothesis import given
from hypothesis import strategies as st

from proctor.engine.topics import SEGMENT_RE
from proctor.server.gateways.ext_authz import path_segments
from proctor.v1 import approvals_pb2, approvals_pb2_grpc
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor

from .mcp_support import audit_events, wait_for

POLICY = Path(__file__).resolve().parent / "http_policy.yaml"


@pytest.fixture(scope="module")
def envoy_proctor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    p = start_proctor(POLICY, tmp_path_factory.mktemp("envoy"))
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def channel(envoy_proctor: ProctorProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(envoy_proctor.address) as ch:
        yield ch


def check(channel: grpc.Channel, method: str, path: str, headers: dict[str, str],
          raw_headers: bool = False, route: dict[str, str] | None = None) -> Any:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.path, http.host = method, path, "api.internal"
    if raw_headers:  # Envoy's encode_raw_headers: header_map instead of the map
        for k, v in headers.items():
            http.header_map.headers.add(key=k, raw_value=v.encode())
    else:
        http.headers.update(headers)
    req.attributes.context_extensions.update(route or {})
    return external_auth_pb2_grpc.AuthorizationStub(channel).Check(req, timeout=10)


def response_headers(answer: Any) -> dict[str, str]:
    got = answer.denied_response.headers or answer.ok_response.headers
    return {h.header.key: h.header.value for h in got}


def test_allow_is_ok_and_headers_fill_the_audited_request(
        channel: grpc.Channel, envoy_proctor: ProctorProcess) -> None:
    answer = check(channel, "GET", "/v1/items/a.txt?page=2", {
        "x-proctor-delegation-path": "planner, fetcher", "x-proctor-tenant": "acme",
        "x-proctor-run-id": "run-7", "x-proctor-risk-tags": "bulk,PII ",
        "x-proctor-label-env": "dev", "x-proctor-label-team": "data"})
    assert answer.status.code == code_pb2.OK
    decision_id = response_headers(answer)["x-proctor-decision-id"]
    [event] = wait_for(lambda: audit_events(envoy_proctor, decision_id=decision_id),
                       "the audited Check")
    assert event["topic"] == "http.GET.v1.items.a_txt"
    assert event["delegation_path"] == ["planner", "fetcher"]
    assert (event["tenant"], event["run_id"]) == ("acme", "run-7")
    assert event["risk_tags"] == ["bulk", "pii"]
    assert event["labels"] == {"env": "dev", "team": "data"}
    assert (event["outcome"], event["rule_id"], event["source"]) == (
        "allow", "allow-reads", "envoy")


def test_deny_is_permission_denied_with_the_reason_in_the_body(channel: grpc.Channel) -> None:
    # Dot segments and percent-encoding are resolved first: this is /admin/users.
    answer = check(channel, "GET", "/v1/../%61dmin//users", {"x-proctor-delegation-path": "a"})
    assert answer.status.code == code_pb2.PERMISSION_DENIED
    assert answer.denied_response.status.code == 403
    body = json.loads(answer.denied_response.body)
    assert body["rule_id"] == "deny-admin" and body["reason"] == "the admin API is off limits"
    assert response_headers(answer)["x-proctor-decision"] == "deny"
    # Tags and labels reach the policy (from header_map too, as with encode_raw_headers).
    prod = check(channel, "GET", "/v1/items", {"x-proctor-delegation-path": "a",
                                               "x-proctor-risk-tags": "bulk",
                                               "x-proctor-label-env": "prod"}, raw_headers=True)
    assert json.loads(prod.denied_response.body)["rule_id"] == "deny-prod-bulk"


def test_require_approval_then_retry_with_the_approval_id(
        channel: grpc.Channel, envoy_proctor: ProctorProcess) -> None:
    headers = {"x-proctor-delegation-path": "planner,writer", "x-proctor-tenant": "acme"}
    first = check(channel, "POST", "/v1/orders", headers)
    assert first.status.code == code_pb2.PERMISSION_DENIED
    approval_id = response_headers(first)["x-proctor-approval-id"]
    assert approval_id and json.loads(first.denied_response.body)["approval_id"] == approval_id
    # Before a reviewer acts, presenting the id does not let the request through.
    presenting = {**headers, "x-proctor-approval-id": approval_id}
    waiting = check(channel, "POST", "/v1/orders", presenting)
    assert waiting.status.code == code_pb2.PERMISSION_DENIED
    approvals_pb2_grpc.ApprovalsStub(channel).ResolveApproval(
        approvals_pb2.ResolveApprovalRequest(approval_id=approval_id, approve=True,
                                             reviewer="dana", reason="ok"), timeout=10)
    retried = check(channel, "POST", "/v1/orders", presenting)
    assert retried.status.code == code_pb2.OK
    # Once: the grant is used up, and it never unlocks another request.
    again = check(channel, "POST", "/v1/orders", presenting)
    assert again.status.code == code_pb2.PERMISSION_DENIED
    other = check(channel, "DELETE", "/v1/orders", presenting)
    assert other.status.code == code_pb2.PERMISSION_DENIED
    events = wait_for(lambda: audit_events(envoy_proctor, approval_presented=approval_id),
                      "the retries' decisions")
    assert any(e["approval_use"] == "consumed" and e["outcome"] == "allow" for e in events)


@pytest.mark.parametrize(("headers", "named"), [
    ({}, "x-proctor-delegation-path: required"),
    ({"x-proctor-delegation-path": "a,,b"}, "x-proctor-delegation-path: an empty agent id"),
    ({"x-proctor-delegation-path": ",".join(f"a{i}" for i in range(33))},
     "x-proctor-delegation-path"),
    ({"x-proctor-delegation-path": "a", "x-proctor-tenant": "t" * 129}, "x-proctor-tenant"),
    ({"x-proctor-delegation-path": "a", "x-proctor-label-": "v"}, "x-proctor-label-<key>"),
    ({"x-proctor-delegation-path": "a", "x-proctor-label-k": "v" * 257}, "x-proctor-label-*"),
    ({"x-proctor-delegation-path": "a", "x-proctor-risk-tags": "t" * 65}, "x-proctor-risk-tags"),
    ({"x-proctor-delegation-path": "a", "x-proctor-approval-id": "x" * 200},
     "x-proctor-approval-id"),
])
def test_bad_headers_get_a_clear_denial(channel: grpc.Channel, envoy_proctor: ProctorProcess,
                                        headers: dict[str, str], named: str) -> None:
    answer = check(channel, "GET", "/v1/bad-headers", headers)
    assert answer.status.code == code_pb2.INVALID_ARGUMENT
    assert answer.denied_response.status.code == 400
    assert named in json.loads(answer.denied_response.body)["error"]
    assert audit_events(envoy_proctor, topic="http.GET.v1.bad-headers") == []


def test_a_path_too_deep_for_a_topic_is_refused_not_cut(channel: grpc.Channel) -> None:
    answer = check(channel, "GET", "/" + "/".join("s" for _ in range(40)),
                   {"x-proctor-delegation-path": "a"})
    assert answer.status.code == code_pb2.INVALID_ARGUMENT
    assert "segments" in json.loads(answer.denied_response.body)["error"]


def test_a_route_can_name_its_own_topic_template(channel: grpc.Channel) -> None:
    answer = check(channel, "POST", "/anything", {"x-proctor-delegation-path": "a"},
                   route={"proctor_topic_template": "route.orders"})
    assert answer.status.code == code_pb2.OK


@given(st.text(max_size=200))
def test_any_path_becomes_valid_segments(path: str) -> None:
    segments = path_segments(path)
    if segments:
        assert all(SEGMENT_RE.fullmatch(s) for s in segments.split("."))


def test_serve_refuses_a_bad_topic_template(tmp_path: Path) -> None:
    out = run_proctor("serve", "--policy", str(POLICY), "--listen", "127.0.0.1:0",
                      "--ext-authz-topic-template", "http.{verb}", cwd=tmp_path)
    assert out.returncode == 2 and "unknown field {verb}" in out.stderr
