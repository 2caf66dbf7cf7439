"""The flags of `proctor serve`, declared on argparse one concern at a time.

Each function below adds one titled group of `--help`: the policy, where the
process listens (and TLS), who the callers are, Redis, the audit, approvals and
the reviewer inbox, the gateways, and the limits that keep one caller from
crowding out the rest. Defaults live in settings.py, beside `Settings`.
"""

from __future__ import annotations

import argparse

from .settings import (
    DEFAULT_AUDIT_DIR,
    DEFAULT_AUDIT_MAXLEN,
    DEFAULT_AUDIT_QUEUE_SIZE,
    DEFAULT_AUDIT_STREAM,
    DEFAULT_EXT_AUTHZ_TOPIC_TEMPLATE,
    DEFAULT_FAIR_SHARE_CALLS,
    DEFAULT_FAIR_SHARE_QUEUE,
    DEFAULT_GRACE_SECONDS,
    DEFAULT_JWT_REFRESH_SECONDS,
    DEFAULT_LISTEN,
    DEFAULT_MAX_APPROVAL_WAITERS,
    DEFAULT_MAX_APPROVAL_WAITERS_PER_CONNECTION,
    DEFAULT_MAX_APPROVAL_WAITERS_PER_PRINCIPAL,
    DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL,
    DEFAULT_MAX_BATCH_ITEMS,
    DEFAULT_MAX_EXPLAIN_BYTES,
    DEFAULT_MAX_PENDING_APPROVALS_PER_TENANT,
    DEFAULT_MAX_POLICY_BYTES,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_PRINCIPAL,
    DEFAULT_RELOAD_POLL_SECONDS,
    LOG_LEVELS,
    MAX_MESSAGE_BYTES,
)


def declare(parser: argparse.ArgumentParser) -> None:
    """Add every `proctor serve` flag to `parser`, one titled group per concern."""
    _policy(parser.add_argument_group("policy"))
    _process(parser.add_argument_group("listening, TLS and the process"))
    _callers(parser.add_argument_group("callers (docs/security.md)"))
    _redis(parser.add_argument_group("Redis (docs/redis.md)"))
    _audit(parser.add_argument_group("audit"))
    _approvals(parser.add_argument_group("approvals and the reviewer inbox (docs/inbox.md)"))
    _gateways(parser.add_argument_group("gateways"))
    _limits(parser.add_argument_group("limits (docs/limits.md)"))


# argparse's group type is private; every group offers add_argument, which is all used here.
Group = argparse._ArgumentGroup


def _policy(g: Group) -> None:
    g.add_argument("--policy", required=True, help="policy YAML file (reloaded on change)")
    g.add_argument(
        "--reload-poll-seconds", type=float, default=DEFAULT_RELOAD_POLL_SECONDS,
        help="how often the policy file is checked for changes",
    )
    g.add_argument(
        "--max-policy-bytes", type=int, default=DEFAULT_MAX_POLICY_BYTES, metavar="N",
        help="refuse a policy file larger than N bytes, or whose YAML aliases expand past "
             "it (at start and on reload)",
    )
    g.add_argument(
        "--local-evaluation", choices=("on", "off"), default="on",
        help="off: Admin.WatchPolicy answers FAILED_PRECONDITION (the policy text stays "
             "on the server) and clients cannot evaluate locally",
    )


def _process(g: Group) -> None:
    g.add_argument("--listen", default=DEFAULT_LISTEN, help="gRPC address HOST:PORT")
    g.add_argument("--tls-cert", default="", help="server certificate (PEM)")
    g.add_argument("--tls-key", default="", help="server private key (PEM)")
    g.add_argument("--workers", type=int, default=1, help="processes on one port (SO_REUSEPORT)")
    g.add_argument(
        "--metrics-listen", default="", help="Prometheus HOST:PORT (worker i uses PORT+i); "
        "loopback only unless --metrics-allow-remote"
    )
    g.add_argument(
        "--metrics-allow-remote", action="store_true",
        help="serve --metrics-listen on a non-loopback address (it has no authentication)",
    )
    g.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    g.add_argument(
        "--grace-seconds", type=float, default=DEFAULT_GRACE_SECONDS,
        help="SIGTERM: how long in-flight calls may take to finish",
    )


def _callers(g: Group) -> None:
    g.add_argument("--client-ca", default="", help="CA for client certificates (mTLS)")
    g.add_argument(
        "--principals", default="",
        help="callers, their roles, tenants, agents, tokens and identities (YAML; reloaded "
             "on change and SIGHUP; docs/security.md)",
    )
    g.add_argument("--jwt-jwks", default="", help="JWT keys: a JWKS file or https URL")
    g.add_argument("--jwt-issuer", default="", help="the `iss` a JWT must carry")
    g.add_argument("--jwt-audience", default="", help="the `aud` a JWT must carry")
    g.add_argument(
        "--jwt-refresh-seconds", type=float, default=DEFAULT_JWT_REFRESH_SECONDS,
        help="how often the JWKS is fetched again (sooner when a token names an unknown key)",
    )


def _redis(g: Group) -> None:
    g.add_argument("--redis-url", default="", help="Redis for budgets, approvals, audit stream")
    g.add_argument(
        "--redis-allow-rdb", action="store_true",
        help="accept a Redis that keeps RDB snapshots only (no appendonly): a crash loses "
             "budgets and approvals written since the last snapshot (docs/redis.md)",
    )
    g.add_argument(
        "--redis-allow-volatile", action="store_true",
        help="accept a Redis without persistence, or one that may evict keys: a restart "
             "forgets every reservation and approval (docs/redis.md)",
    )


def _audit(g: Group) -> None:
    g.add_argument("--audit", choices=("file", "redis"), default="file", help="audit sink")
    g.add_argument("--audit-dir", default=DEFAULT_AUDIT_DIR, help="audit segments / spool dir")
    g.add_argument("--audit-stream", default=DEFAULT_AUDIT_STREAM, help="Redis audit stream")
    g.add_argument("--audit-hmac-key-file", default="", help="add an HMAC to every audit event")
    g.add_argument("--audit-durability", choices=("async", "sync"), default="async")
    g.add_argument("--audit-queue-policy", choices=("block", "shed"), default="block")
    g.add_argument("--audit-queue-size", type=int, default=DEFAULT_AUDIT_QUEUE_SIZE)
    g.add_argument("--audit-maxlen", type=int, default=DEFAULT_AUDIT_MAXLEN)
    g.add_argument(
        "--max-audit-streams-per-principal", type=int,
        default=DEFAULT_MAX_AUDIT_STREAMS_PER_PRINCIPAL,
        help="open StreamDecisions streams of one principal (in development mode, of one "
             "connection); past it RESOURCE_EXHAUSTED",
    )


def _approvals(g: Group) -> None:
    g.add_argument(
        "--max-pending-approvals-per-tenant", type=int,
        default=DEFAULT_MAX_PENDING_APPROVALS_PER_TENANT,
        help="past it a tenant's require_approval gets no approval id, and says why; "
             "other tenants are unaffected",
    )
    g.add_argument(
        "--max-approval-waiters", type=int, default=DEFAULT_MAX_APPROVAL_WAITERS,
        help="open WaitApproval calls in this process; past it RESOURCE_EXHAUSTED",
    )
    g.add_argument(
        "--max-approval-waiters-per-connection", type=int,
        default=DEFAULT_MAX_APPROVAL_WAITERS_PER_CONNECTION,
        help="open WaitApproval calls on one client connection; past it RESOURCE_EXHAUSTED",
    )
    g.add_argument(
        "--max-approval-waiters-per-principal", type=int,
        default=DEFAULT_MAX_APPROVAL_WAITERS_PER_PRINCIPAL,
        help="open WaitApproval calls of one principal; past it RESOURCE_EXHAUSTED, "
             "other principals unaffected",
    )
    g.add_argument(
        "--http-listen", default="",
        help="serve the reviewer inbox (web pages and /api/v1/) on HOST:PORT (docs/inbox.md)",
    )
    g.add_argument(
        "--inbox-url", default="",
        help="the inbox's address as reviewers reach it, for links in webhooks "
             "(default: from --http-listen)",
    )
    g.add_argument(
        "--approval-webhook", action="append", default=[], metavar="URL",
        help="POST signed JSON here when an approval is created, resolved or expires "
             "(repeatable; docs/inbox.md)",
    )
    g.add_argument(
        "--approval-webhook-secret-file", default="",
        help="the HMAC-SHA256 key of X-Proctor-Signature (or PROCTOR_APPROVAL_WEBHOOK_SECRET)",
    )


def _gateways(g: Group) -> None:
    g.add_argument(
        "--ext-authz-topic-template", default=DEFAULT_EXT_AUTHZ_TOPIC_TEMPLATE,
        help="Envoy ext_authz: the topic of an HTTP request, from {method}, {host} and "
        "{path_segments} (docs/envoy.md)",
    )


def _limits(g: Group) -> None:
    """Streams, batches, explain answers and each caller's share of the process."""
    g.add_argument(
        "--max-streams", type=int, default=DEFAULT_MAX_STREAMS,
        help="open EvaluateStream, WatchPolicy, IngestDecisions and StreamDecisions streams "
             "in this process; "
             "past it RESOURCE_EXHAUSTED",
    )
    g.add_argument(
        "--max-streams-per-principal", type=int, default=DEFAULT_MAX_STREAMS_PER_PRINCIPAL,
        help="open EvaluateStream, WatchPolicy, IngestDecisions and StreamDecisions streams "
             "of one principal; past it RESOURCE_EXHAUSTED, other principals unaffected",
    )
    g.add_argument(
        "--max-batch-items", type=int, default=DEFAULT_MAX_BATCH_ITEMS,
        help="EvaluateBatch: items per batch; past it INVALID_ARGUMENT (a batch's bytes are "
             f"bounded by the {MAX_MESSAGE_BYTES >> 20} MiB message limit)",
    )
    g.add_argument(
        "--max-explain-bytes", type=int, default=DEFAULT_MAX_EXPLAIN_BYTES,
        help="explain: the matched rule ids one answer lists, in bytes (in a batch, for all "
             "items together); matched_rule_count still counts them all",
    )
    g.add_argument(
        "--max-calls-per-connection", type=int, default=0, metavar="N",
        help="calls (streams included) one client connection has open at once (HTTP/2 "
             "MAX_CONCURRENT_STREAMS); the client holds the rest back, so one busy connection "
             "cannot queue ahead of every other caller; 0: no limit",
    )
    g.add_argument(
        "--fair-share-calls", type=int, default=DEFAULT_FAIR_SHARE_CALLS, metavar="K",
        help="while other callers are active, a caller (principal; connection in the "
             "development mode) with K EvaluateBatch calls' worth in progress (a full batch "
             "fills it) waits for one to end before its next batch runs; alone it is never "
             "held; 0: off",
    )
    g.add_argument(
        "--fair-share-queue", type=int, default=DEFAULT_FAIR_SHARE_QUEUE, metavar="N",
        help="calls of one caller waiting for its fair share; past it RESOURCE_EXHAUSTED",
    )
