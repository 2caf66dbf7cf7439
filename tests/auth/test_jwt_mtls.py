"""JWT bearers (RSA and EC keys, JWKS rotation) and mTLS identities, over real TLS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proctor.server.auth.tokens import hash_token
from proctor.v1 import admin_pb2, decisions_pb2
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

from .pki import Pki, SigningKey, write_jwks

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"
ISSUER, AUDIENCE = "https://idp.example", "proctor"
EVALUATE = decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal", tenant="acme",
                                         delegation_path=["planner"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = Pki.make(tmp_path_factory.mktemp("pki"))
    p.issue("agent", cn="planner-cert", uri="spiffe://acme.example/agent/planner")
    p.issue("cn-only", cn="cn-reviewer")
    p.issue("stranger", cn="nobody", uri="spiffe://acme.example/agent/stranger")
    return p


def _evaluate(channel: grpc.Channel, metadata: Any = ()) -> tuple[grpc.StatusCode, str]:
    call = channel.unary_unary(
        "/proctor.v1.Decisions/Evaluate",
        request_serializer=decisions_pb2.EvaluateRequest.SerializeToString,
        response_deserializer=decisions_pb2.EvaluateResponse.FromString)
    try:
        call(EVALUATE, metadata=list(metadata), timeout=10)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""


def _get_policy(channel: grpc.Channel, metadata: Any = ()) -> grpc.StatusCode:
    call = channel.unary_unary(
        "/proctor.v1.Admin/GetPolicy",
        request_serializer=admin_pb2.GetPolicyRequest.SerializeToString,
        response_deserializer=admin_pb2.GetPolicyResponse.FromString)
    try:
        call(admin_pb2.GetPolicyRequest(), metadata=list(metadata), timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def _tls_channel(server: ProctorProcess, pki: Pki, client: str | None = None) -> grpc.Channel:
    cert = key = None
    if client is not None:
        cert, key = pki.read(f"{client}.pem"), pki.read(f"{client}.key")
    creds = grpc.ssl_channel_credentials(pki.read("ca.pem"), key, cert)
    return grpc.secure_channel(f"localhost:{server.port}", creds)


def _wait_tls(server: ProctorProcess, pki: Pki, client: str | None = None) -> None:
    def answers() -> bool:
        assert server.proc is not None and server.proc.poll() is None, server.log()
        with _tls_channel(server, pki, client) as ch:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return True

    try:
        wait_until(answers, "a health check over TLS", 60, interval=0.1,
                   ignore=(grpc.RpcError,))
    except AssertionError as e:
        raise AssertionError(server.log()) from e


# -- mTLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    d = tmp_path_factory.mktemp("mtls")
    (d / "principals.yaml").write_text(f"""
principals:
  - id: planner-bot
    roles: [agent]
    tenants: [acme]
    agents: [planner]
    identities: ["spiffe://acme.example/agent/planner"]
  - id: rita
    roles: [reviewer]
    tenants: [acme]
    identities: ["cn-reviewer"]
  - id: tokened
    roles: [admin]
    tokens: ["{hash_token('admin-token')}"]
""")
    p = start_proctor(SEED_POLICY, d, "--principals", str(d / "principals.yaml"),
                      "--tls-cert", str(pki.dir / "server.pem"),
                      "--tls-key", str(pki.dir / "server.key"),
                      "--client-ca", str(pki.dir / "ca.pem"), wait=False)
    try:
        _wait_tls(p, pki, "agent")
        yield p
    finally:
        assert p.stop() == 0, p.log()


def test_a_spiffe_uri_san_names_the_principal(mtls_server: ProctorProcess, pki: Pki) -> None:
    with _tls_channel(mtls_server, pki, "agent") as ch:
        assert _evaluate(ch) == (grpc.StatusCode.OK, "")
        assert _get_policy(ch) == grpc.StatusCode.PERMISSION_DENIED
        # a bearer token, when sent, is the credential
        assert _get_policy(ch, [("authorization", "Bearer admin-token")]) == \
            grpc.StatusCode.OK


def test_a_subject_cn_names_the_principal(mtls_server: ProctorProcess, pki: Pki) -> None:
    with _tls_channel(mtls_server, pki, "cn-only") as ch:
        code, details = _evaluate(ch)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "'rita'" in details


def test_a_certificate_naming_no_principal_is_unauthenticated(
        mtls_server: ProctorProcess, pki: Pki) -> None:
    with _tls_channel(mtls_server, pki, "stranger") as ch:
        code, details = _evaluate(ch)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "names no principal" in details


# -- JWT -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"rsa": SigningKey.rsa("rsa-1"), "ec": SigningKey.ec("ec-1"),
            "next": SigningKey.rsa("rsa-2"), "stranger": SigningKey.rsa("rsa-x")}


@pytest.fixture(scope="module")
def jwt_server(pki: Pki, keys: dict[str, SigningKey],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    d = tmp_path_factory.mktemp("jwt")
    write_jwks(d / "jwks.json", keys["rsa"], keys["ec"])
    p = start_proctor(SEED_POLICY, d, "--jwt-jwks", str(d / "jwks.json"),
                      "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
                      "--jwt-refresh-seconds", "3600",
                      "--tls-cert", str(pki.dir / "server.pem"),
                      "--tls-key", str(pki.dir / "server.key"), wait=False)
    p.jwks = d / "jwks.json"  # type: ignore[attr-defined]
    try:
        _wait_tls(p, pki)
        yield p
    finally:
        assert p.stop() == 0, p.log()


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "planner-bot", "iat": now, "exp": now + 300,
        "proctor_roles": ["agent"], "proctor_tenants": ["acme"], "proctor_agents": ["planner"],
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_a_valid_jwt_is_its_claims(jwt_server: ProctorProcess, pki: Pki,
                                   keys: dict[str, SigningKey], which: str) -> None:
    with _tls_channel(jwt_server, pki) as ch:
        assert _evaluate(ch, _bearer(keys[which].sign(_claims()))) == (grpc.StatusCode.OK, "")
        code, details = _evaluate(ch, _bearer(keys[which].sign(
            _claims(proctor_tenants=["globex"]))))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "tenant 'acme'" in details


def _none_token() -> str:
    return jwt.encode(_claims(), None, algorithm="none")  # type: ignore[arg-type]


def _hmac_with_public_key(keys: dict[str, SigningKey]) -> str:
    # The classic confusion: HS256 keyed with the issuer's public key (bytes of its PEM).
    import base64
    import hashlib
    import hmac
    import json

    from cryptography.hazmat.primitives import serialization
    pem = keys["rsa"].private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(_claims()).encode())
    sig = b64(hmac.new(pem, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


@pytest.mark.parametrize(("case", "make", "reason"), [
    ("expired", lambda k: k["rsa"].sign(_claims(exp=int(time.time()) - 120)), "expired"),
    ("not yet valid", lambda k: k["rsa"].sign(_claims(nbf=int(time.time()) + 600)),
     "not valid yet"),
    ("wrong audience", lambda k: k["rsa"].sign(_claims(aud="someone-else")), "audience"),
    ("wrong issuer", lambda k: k["rsa"].sign(_claims(iss="https://evil.example")), "issuer"),
    ("no exp", lambda k: k["rsa"].sign(_claims(exp=None)), "exp"),
    ("alg none", lambda k: _none_token(), "refused"),
    ("hmac with the public key", _hmac_with_public_key, "refused"),
    ("key not in the JWKS", lambda k: k["stranger"].sign(_claims()), "not in the JWKS"),
    ("bad signature", lambda k: k["rsa"].sign(_claims())[:-4] + "AAAA", "JWT"),
])
def test_bad_jwts_are_unauthenticated(jwt_server: ProctorProcess, pki: Pki,
                                      keys: dict[str, SigningKey], case: str, make: Any,
                                      reason: str) -> None:
    with _tls_channel(jwt_server, pki) as ch:
        code, details = _evaluate(ch, _bearer(make(keys)))
    assert code == grpc.StatusCode.UNAUTHENTICATED, (case, code, details)
    assert reason in details, (case, details)


def test_a_jwks_rotated_while_serving(jwt_server: ProctorProcess, pki: Pki,
                                      keys: dict[str, SigningKey]) -> None:
    token = keys["next"].sign(_claims())
    write_jwks(jwt_server.jwks, keys["next"], keys["ec"])  # type: ignore[attr-defined]
    with _tls_channel(jwt_server, pki) as ch:
        # an unknown key id asks for an early refresh (at most every few seconds)
        wait_until(lambda: _evaluate(ch, _bearer(token))[0] == grpc.StatusCode.OK,
                   "the rotated key to be accepted", 30, interval=0.2)
        code, _ = _evaluate(ch, _bearer(keys["rsa"].sign(_claims())))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # the retired key no longer works
