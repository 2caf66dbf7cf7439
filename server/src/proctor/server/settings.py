"""The settings of `proctor serve`: every default, the frozen `Settings`, its validation.

`add_arguments` declares the flags (flags.py, grouped by concern); `Settings.from_args`
turns the parsed namespace into a frozen `Settings` and `Settings.validate`
refuses bad combinations early, with a message that says what to change.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import stat
import urllib.parse
from dataclasses import dataclass, fields

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_AUDIT_DIR = "./proctor-audit"
DEFAULT_AUDIT_STREAM = "proctor:audit"
DEFAULT_AUDIT_QUEUE_SIZE = 65536
DEFAULT_AUDIT_MAXLEN = 1_000_000
DEFAULT_GRACE_SECONDS = 10.0
DEFAULT_RELOAD_POLL_SECONDS = 1.0
DEFAULT_JWT_REFRESH_SECONDS = 300.0
DEFAULT_MAX_POLICY_BYTES = 64 * 1024 * 1024  # engine.DEFAULT_MAX_BYTES
# Envoy ext_authz (gateways/ext_authz.py): the topic of an HTTP request.
DEFAULT_EXT_AUTHZ_TOPIC_TEMPLATE = "http.{method}.{path_segments}"
MAX_MESSAGE_BYTES = 1 << 20
DEFAULT_MAX_PENDING_APPROVALS_PER_TENANT = 1000
DEFAULT_MAX_APPROVAL_WAITERS = 10_000
DEFAULT_MAX_APPROVAL_WAITERS_PER_CONNECTION = 2000
DEFAULT_MAX_STREAMS = 10_000
DEFAULT_MAX_STREAMS_PER_PRINCIPAL = 1000
DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL = 16
DEFAULT_MAX_APPROVAL_WAITERS_PER_PRINCIPAL = 1000
# EvaluateBatch: items per batch (its bytes are bounded by MAX_MESSAGE_BYTES), and the rule
# ids an explain answer lists (a batch's items share it).
DEFAULT_MAX_BATCH_ITEMS = 1000
DEFAULT_MAX_EXPLAIN_BYTES = 64 * 1024
# Each caller's share of the event loop while others are active (fairness.py): calls in
# progress (0: off), and its calls parked waiting for their share.
DEFAULT_FAIR_SHARE_CALLS = 2
DEFAULT_FAIR_SHARE_QUEUE = 1000
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A flag or a combination of flags that `proctor serve` refuses."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The configuration of one `proctor serve` process (and of each of its workers)."""

    policy: str
    listen: str = DEFAULT_LISTEN
    redis_url: str = ""
    audit: str = "file"
    audit_dir: str = DEFAULT_AUDIT_DIR
    audit_stream: str = DEFAULT_AUDIT_STREAM
    audit_hmac_key_file: str = ""
    audit_durability: str = "async"
    audit_queue_policy: str = "block"
    audit_queue_size: int = DEFAULT_AUDIT_QUEUE_SIZE
    audit_maxlen: int = DEFAULT_AUDIT_MAXLEN
    workers: int = 1
    metrics_listen: str = ""
    metrics_allow_remote: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    # Callers (DESIGN section 12): principals file, JWTs; --client-ca above is mTLS.
    principals: str = ""
    jwt_jwks: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_refresh_seconds: float = DEFAULT_JWT_REFRESH_SECONDS
    log_level: str = "info"
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    reload_poll_seconds: float = DEFAULT_RELOAD_POLL_SECONDS
    max_policy_bytes: int = DEFAULT_MAX_POLICY_BYTES
    ext_authz_topic_template: str = DEFAULT_EXT_AUTHZ_TOPIC_TEMPLATE
    # Redis durability (docs/redis.md) and the approval limits (DESIGN section 7)
    redis_allow_rdb: bool = False
    redis_allow_volatile: bool = False
    max_pending_approvals_per_tenant: int = DEFAULT_MAX_PENDING_APPROVALS_PER_TENANT
    max_approval_waiters: int = DEFAULT_MAX_APPROVAL_WAITERS
    max_approval_waiters_per_connection: int = DEFAULT_MAX_APPROVAL_WAITERS_PER_CONNECTION
    max_approval_waiters_per_principal: int = DEFAULT_MAX_APPROVAL_WAITERS_PER_PRINCIPAL
    # Streams (DESIGN section 11): open ones per process; WatchPolicy on or off.
    max_streams: int = DEFAULT_MAX_STREAMS
    max_streams_per_principal: int = DEFAULT_MAX_STREAMS_PER_PRINCIPAL
    max_audit_streams_per_principal: int = DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL
    local_evaluation: str = "on"
    # Decisions (docs/limits.md)
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    max_explain_bytes: int = DEFAULT_MAX_EXPLAIN_BYTES
    fair_share_calls: int = DEFAULT_FAIR_SHARE_CALLS
    fair_share_queue: int = DEFAULT_FAIR_SHARE_QUEUE
    max_calls_per_connection: int = 0
    # The reviewer inbox (DESIGN section 15): HTTP beside the gRPC port.
    http_listen: str = ""
    inbox_url: str = ""  # the inbox as reviewers reach it (links in webhooks)
    approval_webhook: tuple[str, ...] = ()
    approval_webhook_secret_file: str = ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values["approval_webhook"] = tuple(values.get("approval_webhook") or ())
        return cls(**values)

    @property
    def inbox_link(self) -> str:
        """Where reviewers reach the inbox: --inbox-url, else --http-listen's address."""
        if self.inbox_url or not self.http_listen:
            return self.inbox_url.rstrip("/")
        host, port = split_host_port(self.http_listen, "--http-listen")
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def listen_host(self) -> str:
        return split_host_port(self.listen, "--listen")[0]

    @property
    def listen_port(self) -> int:
        return split_host_port(self.listen, "--listen")[1]

    @property
    def embedded_stores(self) -> bool:
        """Budgets and approvals live in this process (no Redis configured)."""
        return not self.redis_url

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)

    @property
    def authenticated(self) -> bool:
        """Callers prove who they are (else the development mode: loopback, anonymous admin)."""
        return bool(self.principals or self.client_ca or self.jwt_jwks)

    def validate(self) -> Settings:
        """Raise SettingsError naming the flag when anything is wrong; return self."""
        _require_file(self.policy, "--policy")
        host, _ = self._validate_workers()
        self._validate_audit()
        self._validate_redis_url()
        self._validate_metrics()
        self._validate_tls()
        self._validate_callers(host)
        self._validate_inbox()
        self._validate_webhooks()
        self._validate_limits()
        return self

    def _validate_workers(self) -> tuple[str, int]:
        """--listen and --workers; return --listen's host and port."""
        host, port = split_host_port(self.listen, "--listen")
        if self.workers < 1:
            raise SettingsError(f"--workers must be at least 1, got {self.workers}")
        if self.workers > 1 and self.embedded_stores:
            raise SettingsError(
                f"--workers {self.workers} needs --redis-url: without Redis, budgets and "
                "approvals live in embedded in-process stores, and several workers would "
                "split that state (each would keep its own budgets and approvals). "
                "Run one worker, or pass --redis-url redis://HOST:PORT/DB."
            )
        if self.workers > 1 and port == 0:
            raise SettingsError("--workers above 1 needs a fixed --listen port (not 0)")
        return host, port

    def _validate_audit(self) -> None:
        """The --audit-* flags."""
        if self.audit not in ("file", "redis"):
            raise SettingsError(f"--audit must be file or redis, got {self.audit!r}")
        if self.audit == "redis" and not self.redis_url:
            raise SettingsError("--audit redis needs --redis-url")
        if self.audit_durability not in ("async", "sync"):
            raise SettingsError(
                f"--audit-durability must be async or sync, got {self.audit_durability!r}"
            )
        if self.audit_queue_policy not in ("block", "shed"):
            raise SettingsError(
                f"--audit-queue-policy must be block or shed, got {self.audit_queue_policy!r}"
            )
        if self.audit_queue_size < 1:
            raise SettingsError(
                f"--audit-queue-size must be at least 1, got {self.audit_queue_size}"
            )
        if self.audit_maxlen < 1:
            raise SettingsError(f"--audit-maxlen must be at least 1, got {self.audit_maxlen}")
        if not self.audit_stream:
            raise SettingsError("--audit-stream must not be empty")
        if self.audit_hmac_key_file:
            _require_file(self.audit_hmac_key_file, "--audit-hmac-key-file")

    def _validate_redis_url(self) -> None:
        """--redis-url parses (the connection is tried at start-up)."""
        if self.redis_url:
            from .redis.url import parse_redis_url

            try:
                parse_redis_url(self.redis_url)
            except ValueError as e:
                raise SettingsError(f"--redis-url: {e}") from None

    def _validate_metrics(self) -> None:
        """--metrics-listen: a fixed port with workers, loopback unless allowed."""
        if self.metrics_listen:
            mhost, mport = split_host_port(self.metrics_listen, "--metrics-listen")
            if self.workers > 1 and mport == 0:
                raise SettingsError("--metrics-listen with --workers needs a fixed port (not 0)")
            if not self.metrics_allow_remote and not _is_loopback(mhost):
                raise SettingsError(
                    f"--metrics-listen {self.metrics_listen}: the metrics endpoint has no "
                    "authentication (it names rules, policy versions and load), so it "
                    "listens on loopback only (127.0.0.1, ::1, localhost); pass "
                    "--metrics-allow-remote to serve it on other addresses")

    def _validate_tls(self) -> None:
        """--tls-cert, --tls-key and --client-ca."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_cert:
            _require_file(self.tls_cert, "--tls-cert")
            _require_file(self.tls_key, "--tls-key")
        if self.client_ca:
            if not self.tls_cert:
                raise SettingsError("--client-ca (mTLS) needs --tls-cert and --tls-key")
            _require_file(self.client_ca, "--client-ca")

    def _validate_inbox(self) -> None:
        """--http-listen: loopback unless callers log in over TLS."""
        if self.http_listen:
            http_host, http_port = split_host_port(self.http_listen, "--http-listen")
            if self.workers > 1 and http_port == 0:
                raise SettingsError("--http-listen with --workers needs a fixed port (not 0)")
            if not _is_loopback(http_host) and not self.authenticated:
                raise SettingsError(
                    f"--http-listen {self.http_listen}: without principals nobody logs in to "
                    "the inbox and every visitor is an admin, so it listens on loopback only "
                    "(127.0.0.1, ::1, localhost); give --principals (or --jwt-jwks) to serve "
                    "it elsewhere"
                )
            if not _is_loopback(http_host) and not self.tls:
                raise SettingsError(
                    f"--http-listen {self.http_listen}: reviewers' tokens and session cookies "
                    "off loopback need TLS: give --tls-cert and --tls-key"
                )

    def _validate_webhooks(self) -> None:
        """--approval-webhook, its secret, and --inbox-url."""
        for url in self.approval_webhook:
            _check_url(url, "--approval-webhook")
        if self.inbox_url:
            _check_url(self.inbox_url, "--inbox-url")
        if self.approval_webhook:
            if self.approval_webhook_secret_file:
                _require_file(self.approval_webhook_secret_file,
                              "--approval-webhook-secret-file")
            elif not os.environ.get("PROCTOR_APPROVAL_WEBHOOK_SECRET", "").strip():
                raise SettingsError(
                    "--approval-webhook needs --approval-webhook-secret-file FILE (or the "
                    "environment's PROCTOR_APPROVAL_WEBHOOK_SECRET): every delivery is signed"
                )

    def _validate_limits(self) -> None:
        """Log level, timings, sizes and the other bounds."""
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.grace_seconds < 0:
            raise SettingsError("--grace-seconds must not be negative")
        if self.reload_poll_seconds <= 0:
            raise SettingsError("--reload-poll-seconds must be positive")
        if self.max_policy_bytes < 1:
            raise SettingsError(
                f"--max-policy-bytes must be at least 1, got {self.max_policy_bytes}")
        from .gateways.topics import TopicTemplate

        try:
            TopicTemplate(self.ext_authz_topic_template, ("method", "host", "path_segments"),
                          "--ext-authz-topic-template")
        except ValueError as e:
            raise SettingsError(str(e)) from None
        for flag, value in (
            ("--max-pending-approvals-per-tenant", self.max_pending_approvals_per_tenant),
            ("--max-approval-waiters", self.max_approval_waiters),
            ("--max-approval-waiters-per-connection", self.max_approval_waiters_per_connection),
            ("--max-approval-waiters-per-principal", self.max_approval_waiters_per_principal),
            ("--max-streams", self.max_streams),
            ("--max-streams-per-principal", self.max_streams_per_principal),
            ("--max-audit-streams-per-principal", self.max_audit_streams_per_principal),
            ("--max-batch-items", self.max_batch_items),
            ("--max-explain-bytes", self.max_explain_bytes),
            ("--fair-share-queue", self.fair_share_queue),
        ):
            if value < 1:
                raise SettingsError(f"{flag} must be at least 1, got {value}")
        if self.max_calls_per_connection < 0:
            raise SettingsError("--max-calls-per-connection must be 0 (no limit) or more, "
                                f"got {self.max_calls_per_connection}")
        if self.fair_share_calls < 0:
            raise SettingsError(
                f"--fair-share-calls must be 0 (off) or more, got {self.fair_share_calls}")

    def _validate_callers(self, host: str) -> None:
        """--principals and --jwt-*; off loopback, callers need identities and TLS."""
        if self.principals:
            _require_file(self.principals, "--principals")
        if self.jwt_jwks:
            if self.jwt_jwks.startswith("http://"):
                raise SettingsError("--jwt-jwks: fetch keys over https, or give a file")
            if not self.jwt_jwks.startswith("https://"):
                _require_file(self.jwt_jwks, "--jwt-jwks")
            if not self.jwt_issuer or not self.jwt_audience:
                raise SettingsError("--jwt-jwks needs --jwt-issuer and --jwt-audience: a token "
                                    "is accepted only from your issuer, for this server")
            if self.jwt_refresh_seconds <= 0:
                raise SettingsError("--jwt-refresh-seconds must be positive")
        elif self.jwt_issuer or self.jwt_audience:
            raise SettingsError("--jwt-issuer and --jwt-audience go with --jwt-jwks")
        if _is_loopback(host):
            return
        if not self.authenticated:
            raise SettingsError(
                f"--listen {self.listen}: with no authentication every caller is an "
                "anonymous admin, so Proctor listens on loopback only (127.0.0.1, ::1, "
                "localhost). To listen on other addresses give callers identities: "
                "--principals FILE (bearer tokens, with --tls-cert/--tls-key), --client-ca "
                "(mTLS), or --jwt-jwks with --jwt-issuer and --jwt-audience (docs/security.md)"
            )
        if (self.principals or self.jwt_jwks) and not self.tls:
            raise SettingsError(
                f"--listen {self.listen}: bearer tokens off loopback need TLS: give "
                "--tls-cert and --tls-key (a token sent in clear can be replayed)"
            )


def split_host_port(value: str, flag: str) -> tuple[str, int]:
    """'127.0.0.1:50051' -> ('127.0.0.1', 50051); '[::1]:50051' -> ('::1', 50051)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(f"{flag} must be HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise SettingsError(f"{flag} must be HOST:PORT, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"{flag}: port must be 0..65535, got {port}")
    return host, port


def _check_url(url: str, flag: str) -> None:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{flag} must be an http:// or https:// URL, got {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_file(path: str, flag: str) -> None:
    if not path:
        raise SettingsError(f"{flag} is required")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SettingsError(f"{flag} {path}: no such file") from None
    except OSError as e:
        raise SettingsError(f"{flag} {path}: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise SettingsError(f"{flag} {path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise SettingsError(f"{flag} {path}: not readable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every `proctor serve` flag (DESIGN sections 6 and 7), grouped by concern."""
    # flags.py reads this module's defaults: imported here, when called, not at the top.
    from .flags import declare

    declare(parser)
