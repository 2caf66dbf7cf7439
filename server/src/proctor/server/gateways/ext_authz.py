"""Envoy external authorization: `envoy.service.auth.v3.Authorization/Check` on the gRPC port.

Envoy's `ext_authz` HTTP filter (and Istio's, and agentgateway's) asks Check
before it forwards a request. Each Check is an ordinary decision: it goes
through the Decisions service's own decide-and-record path (`decide`), so it
is audited like Evaluate (with `"source": "envoy"`), approvals and all.

The request is built from the HTTP request (docs/envoy.md has a worked example):

- topic: `--ext-authz-topic-template` (default `http.{method}.{path_segments}`),
  or the route's context extension `proctor_topic_template`. `{method}` is the
  HTTP method, `{host}` the authority (one segment), `{path_segments}` the path
  without query or fragment, percent-decoded once, with `.` and `..` resolved
  and empty segments dropped, one topic segment per path segment (each made
  valid: gateways/topics.py). `GET /v1/files/a.txt` -> `http.GET.v1.files.a_txt`;
  `/` adds nothing (`http.GET`).
- `x-proctor-delegation-path` (comma-separated, root first): the path; absent,
  the mTLS peer Envoy saw (`source.principal`) acts alone; neither: refused.
- `x-proctor-tenant`, `x-proctor-run-id`, `x-proctor-request-id`,
  `x-proctor-risk-tags` (comma-separated), `x-proctor-label-<key>` (one label
  each), `x-proctor-approval-id` (an approval granted earlier, for the retry).

Answers: allow is OK (the upstream request gets `x-proctor-decision-id`); deny
is PERMISSION_DENIED with HTTP 403 and a JSON body naming the rule and reason;
require_approval is PERMISSION_DENIED, 403, with `x-proctor-approval-id` in the
response so the client can wait for a reviewer and retry with that header.
Headers outside the request limits (DESIGN section 2) are INVALID_ARGUMENT with
HTTP 400 and a body naming the header and the limit; nothing is decided or
recorded then, as for an invalid Evaluate. Never an exception for bad input.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from proctor import engine

from .. import auth
from ..audit.log import AuditUnavailable
from .topics import TopicTemplate, segment

SERVICE_NAME = "envoy.service.auth.v3.Authorization"
DEFAULT_TOPIC_TEMPLATE = "http.{method}.{path_segments}"
TEMPLATE_FIELDS = ("method", "host", "path_segments")
ROUTE_TEMPLATE_KEY = "proctor_topic_template"
SOURCE = "envoy"

PREFIX = "x-proctor-"
LABEL_PREFIX = "x-proctor-label-"
H_PATH = "x-proctor-delegation-path"
H_TENANT = "x-proctor-tenant"
H_RUN = "x-proctor-run-id"
H_REQUEST = "x-proctor-request-id"
H_TAGS = "x-proctor-risk-tags"
H_APPROVAL = "x-proctor-approval-id"
H_DECISION_ID = "x-proctor-decision-id"
H_DECISION = "x-proctor-decision"
H_RULE = "x-proctor-rule-id"
# The engine's field name -> the header that carried it, for messages.
_FIELD_HEADER = {"delegation_path": H_PATH, "tenant": H_TENANT, "run_id": H_RUN,
                 "request_id": H_REQUEST, "risk_tags": H_TAGS, "labels": LABEL_PREFIX + "*",
                 "topic": "the method and path"}
_DECISION_NAMES = {1: "allow", 2: "deny", 3: "require_approval"}
MAX_APPROVAL_ID_CHARS = 128


class BadHeaders(ValueError):
    """A request whose headers cannot make a valid EvaluateRequest; the message names why."""


def path_segments(path: str) -> str:
    """The path part of a request target as dot-separated topic segments (module docstring)."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = posixpath.normpath("/" + unquote(path))
    return ".".join(segment(part) for part in path.split("/") if part)


def _headers(http: Any) -> dict[str, str]:
    """The request headers by lower-cased name (Envoy fills `headers`, or `header_map` with
    encode_raw_headers); a repeated header joins its values with commas, as HTTP does."""
    if len(http.headers):
        return {k.lower(): v for k, v in http.headers.items()}
    out: dict[str, str] = {}
    for h in http.header_map.headers:
        value = h.value or h.raw_value.decode("utf-8", "replace")
        key = h.key.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def _listed(text: str) -> list[str]:
    return [item.strip() for item in text.split(",")]


def build_request(check: Any, template: TopicTemplate) -> tuple[engine.Request, str]:
    """The engine request and the presented approval id of one CheckRequest; BadHeaders."""
    attrs = check.attributes
    http = attrs.request.http
    headers = _headers(http)
    route_template = attrs.context_extensions.get(ROUTE_TEMPLATE_KEY)
    if route_template:
        try:
            template = TopicTemplate(route_template, TEMPLATE_FIELDS,
                                     f"context extension {ROUTE_TEMPLATE_KEY}")
        except ValueError as e:
            raise BadHeaders(str(e)) from None
    topic = template.render(method=segment(http.method.upper()), host=segment(http.host),
                            path_segments=path_segments(http.path))
    if H_PATH in headers:
        path = _listed(headers[H_PATH])
        if any(not agent for agent in path):
            raise BadHeaders(f"{H_PATH}: an empty agent id (comma-separated ids, root first)")
    elif attrs.source.principal:
        path = [attrs.source.principal]
    else:
        raise BadHeaders(f"{H_PATH}: required (comma-separated agent ids, root first), "
                         "or an mTLS peer Envoy can name")
    labels = {key[len(LABEL_PREFIX):]: value for key, value in headers.items()
              if key.startswith(LABEL_PREFIX)}
    if "" in labels:
        raise BadHeaders(f"{LABEL_PREFIX}<key>: a label header needs a key")
    approval_id = headers.get(H_APPROVAL, "").strip()
    if len(approval_id) > MAX_APPROVAL_ID_CHARS:
        raise BadHeaders(f"{H_APPROVAL}: at most {MAX_APPROVAL_ID_CHARS} characters "
                         f"(got {len(approval_id)})")
    tags = [t for t in _listed(headers[H_TAGS]) if t] if H_TAGS in headers else []
    try:
        req = engine.Request(
            topic=topic, delegation_path=path, risk_tags=tags, labels=labels,
            tenant=headers.get(H_TENANT, ""), run_id=headers.get(H_RUN, ""),
            request_id=headers.get(H_REQUEST, ""),
        )
    except engine.RequestError as e:
        where = _FIELD_HEADER.get(e.field, e.field)
        raise BadHeaders(f"{where}: {e.message}" + (f" (topic {topic!r})"
                                                    if e.field == "topic" else "")) from None
    return req, approval_id


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _denied(code: int, http_status: int, body: Mapping[str, Any],
            headers: Mapping[str, str]) -> external_auth_pb2.CheckResponse:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=str(body.get("reason") or body.get("error"))),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status),
            headers=[_header("content-type", "application/json"),
                     *(_header(k, v) for k, v in headers.items() if v)],
            body=text,
        ),
    )


# Envoy's generated modules carry no type information, so their servicer base is Any.
class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Check: one decision per HTTP request, through DecisionsService.decide."""

    def __init__(self, decisions: Any, template: str = DEFAULT_TOPIC_TEMPLATE) -> None:
        self.decisions = decisions
        self.template = TopicTemplate(template, TEMPLATE_FIELDS, "--ext-authz-topic-template")

    async def Check(self, request: external_auth_pb2.CheckRequest,
                    context: grpc.aio.ServicerContext[external_auth_pb2.CheckRequest,
                                                      external_auth_pb2.CheckResponse]
                    ) -> external_auth_pb2.CheckResponse:
        try:
            req, approval_id = build_request(request, self.template)
        except BadHeaders as e:
            self.decisions.metrics.invalid("Check", "headers")
            return _denied(code_pb2.INVALID_ARGUMENT, 400, {"error": str(e)}, {})
        try:  # the caller (the proxy) for its tenants and agents only
            req.tenant = auth.authorize(auth.caller(), req.tenant, req.delegation_path)
        except auth.Denied as e:
            return _denied(code_pb2.PERMISSION_DENIED, 403, {"error": e.message}, {})
        try:
            answer, _ = await self.decisions.decide(req, approval_id, SOURCE)
        except AuditUnavailable as e:  # fail closed: the request is not let through
            return _denied(code_pb2.UNAVAILABLE, 503, {"error": str(e)}, {})
        code, rule_id, reason, policy_version, decision_id, granted_id = answer[:6]
        decision = _DECISION_NAMES.get(code, "deny")
        if decision == "allow":
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(
                    headers=[_header(H_DECISION_ID, decision_id)]),
            )
        body = {"decision": decision, "rule_id": rule_id, "reason": reason,
                "policy_version": policy_version, "decision_id": decision_id}
        headers = {H_DECISION: decision, H_RULE: rule_id, H_DECISION_ID: decision_id}
        if decision == "require_approval":
            body["approval_id"] = granted_id
            headers[H_APPROVAL] = granted_id
        return _denied(code_pb2.PERMISSION_DENIED, 403, body, headers)


def add_to(server: Any, decisions: Any, template: str = DEFAULT_TOPIC_TEMPLATE) -> str:
    """Serve Check on `server` (a MethodTable); return the service name for reflection."""
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(decisions, template), server)
    return SERVICE_NAME
