"""What the sync and asyncio clients share: options, request building, error policy.

A request that names no delegation_path gets the current one (proctor.client.delegation).

A service's methods are written once per flavour (client.py, aio.py) as a
request builder, one `_call` through the retry loop and a result converter;
budgets and approvals add their methods the same way, with their own stubs.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import grpc

from proctor.v1 import decisions_pb2

from .delegation import delegation_path as delegation_path_now
from .errors import ProctorError, from_rpc_error
from .results import EvaluationRequest
from .retry import RetryPolicy

MAX_MESSAGE_BYTES = 1 << 20
# The bearer token when neither token= nor token_file= is given.
TOKEN_ENV = "PROCTOR_TOKEN"
DEFAULT_TIMEOUT = 2.0

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
)


Metadata = tuple[tuple[str, str], ...]


def bearer_metadata(token: str | None = None,
                    token_file: str | os.PathLike[str] | None = None) -> Metadata:
    """`authorization: Bearer` metadata from `token`, else the first line of `token_file`,
    else $PROCTOR_TOKEN; () when there is none (a server in development mode)."""
    if token is None and token_file is not None:
        with open(token_file, encoding="utf-8") as f:
            token = f.readline().strip()
        if not token:
            raise ValueError(f"token file {os.fspath(token_file)} is empty")
    if token is None:
        token = os.environ.get(TOKEN_ENV, "").strip() or None
    return (("authorization", f"Bearer {token}"),) if token else ()


def target_host(target: str) -> str | None:
    """The host of a gRPC target ("host:port", "dns:///host:port", "[::1]:50051");
    None for a Unix socket ("unix:...")."""
    if re.match(r"unix(-abstract)?:", target):
        return None
    rest = re.sub(r"^(dns|ipv4|ipv6):(//[^/]*/)?", "", target).split(",")[0]
    bracketed = re.match(r"\[([^\]]+)\]", rest)
    if bracketed:
        return bracketed.group(1)
    if rest.count(":") > 1:
        return rest  # a bare IPv6 address
    return rest.split(":")[0]


def is_local_target(target: str) -> bool:
    """Is the target on this machine (loopback or a Unix socket)?"""
    host = target_host(target)
    if host is None:
        return True
    h = host.lower()
    return h in ("localhost", "::1") or re.fullmatch(r"127(\.\d{1,3}){3}", h) is not None


def check_token_transport(target: str, metadata: Metadata, secure: bool,
                          allow_insecure_token: bool = False) -> None:
    """Refuse a bearer token that would cross the network in plaintext: a token to a
    host other than loopback (or a Unix socket) needs TLS, unless allow_insecure_token
    says a sidecar or mesh encrypts that hop (the Node client's rule)."""
    has_token = any(k.lower() == "authorization" for k, _ in metadata)
    if not has_token or secure or allow_insecure_token or is_local_target(target):
        return
    raise ValueError(
        f"a bearer token to {target_host(target)} over plaintext would be readable on the "
        "network: give TLS files (tls_ca=, and tls_cert=/tls_key= for mTLS) or credentials=, "
        "or allow_insecure_token=True when a sidecar or mesh encrypts the hop")


def tls_credentials(tls_ca: str | os.PathLike[str] | None = None,
                    tls_cert: str | os.PathLike[str] | None = None,
                    tls_key: str | os.PathLike[str] | None = None,
                    ) -> grpc.ChannelCredentials | None:
    """TLS channel credentials from PEM files (a CA to trust, and for mTLS a client
    certificate and key); None when no file is given."""
    if not (tls_ca or tls_cert or tls_key):
        return None
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together: give both or neither")

    def read(path: str | os.PathLike[str] | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(read(tls_ca), read(tls_key), read(tls_cert))


class ClientOptions:
    """Settings common to both clients."""

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        fail_closed: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Iterable[tuple[str, Any]] = (),
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.fail_closed = fail_closed
        self.credentials = credentials
        has_auth = any(k.lower() == "authorization" for k, _ in metadata)
        self.metadata = (*(() if has_auth else bearer_metadata(token, token_file)),
                         *metadata)
        self.channel_options = (*CHANNEL_OPTIONS, *options)


def build_request(
    topic: str | EvaluationRequest,
    *,
    delegation_path: Sequence[str] = (),
    risk_tags: Sequence[str] = (),
    tenant: str = "",
    run_id: str = "",
    request_id: str = "",
    labels: Mapping[str, str] | None = None,
    approval_id: str = "",
    explain: bool = False,
) -> decisions_pb2.EvaluateRequest:
    if isinstance(topic, EvaluationRequest):
        return with_current_path(topic.to_proto())
    return decisions_pb2.EvaluateRequest(
        topic=topic,
        delegation_path=list(delegation_path or delegation_path_now()),
        risk_tags=list(risk_tags),
        tenant=tenant,
        run_id=run_id,
        request_id=request_id,
        labels=dict(labels or {}),
        approval_id=approval_id,
        explain=explain,
    )


def with_current_path(
    request: decisions_pb2.EvaluateRequest,
) -> decisions_pb2.EvaluateRequest:
    """`request`, with the current delegation() path when it names none (a caller's message
    is copied, never changed)."""
    if request.delegation_path:
        return request
    path = delegation_path_now()
    if not path:
        return request
    copy = decisions_pb2.EvaluateRequest()
    copy.CopyFrom(request)
    copy.delegation_path.extend(path)
    return copy


def build_batch(
    items: Iterable[EvaluationRequest | Mapping[str, Any] | decisions_pb2.EvaluateRequest],
) -> decisions_pb2.EvaluateBatchRequest:
    out = decisions_pb2.EvaluateBatchRequest()
    for item in items:
        if isinstance(item, decisions_pb2.EvaluateRequest):
            out.requests.append(with_current_path(item))
        elif isinstance(item, EvaluationRequest):
            out.requests.append(with_current_path(item.to_proto()))
        else:
            fields = dict(item)
            out.requests.append(build_request(fields.pop("topic"), **fields))
    return out


class Deadline:
    """One call's overall deadline, shared by its attempts."""

    __slots__ = ("_end",)

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())

    def allows(self, pause: float) -> bool:
        """Is there time for a pause and another attempt?"""
        left = self.remaining()
        return left is None or left > pause


def classify(error: grpc.RpcError, method: str) -> ProctorError:
    return from_rpc_error(error, method)


def may_fail_closed(error: ProctorError, fail_closed: bool) -> bool:
    """Fail-closed turns every failure into a deny, except a request the server called invalid."""
    return fail_closed and error.code != grpc.StatusCode.INVALID_ARGUMENT


def describe(error: ProctorError, attempts: int) -> str:
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return f"{error.code.name}{tries}: {error.details}"
