"""Wiring of one server process: settings -> policy holder -> stores -> servicers -> gRPC server.

`serve(settings)` runs one process until SIGTERM/SIGINT: here it loads the
policy (refusing to start on a bad one), the callers' credentials, Redis and the
audit pipeline, and registers every service in `register_services`; the serve
lifecycle (listeners, signals, the drain on SIGTERM) is lifecycle.py's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proctor import engine
from proctor.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    approvals_pb2,
    approvals_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    budgets_pb2,
    decisions_pb2,
    decisions_pb2_grpc,
    probe_pb2,
    probe_pb2_grpc,
)

from . import health as health_names
from . import reflection as server_reflection
from .admin import AdminService
from .approvals import build_approval_store
from .approvals.metrics import register as register_approval_metrics
from .approvals.service import ApprovalsService
from .audit import build_audit, ingest
from .audit.metrics import register as register_audit_metrics
from .audit.stream import AuditService
from .auth import Authenticator, Guard, PrincipalsError, PrincipalsHolder
from .auth import guard as auth_guard
from .auth.jwt_keys import JwksError, JwtVerifier
from .budgets import build_budget_store
from .budgets.service import BudgetsService
from .decisions import EVALUATE_METHOD, EVALUATE_STREAM_METHOD, DecisionsService
from .fairness import FairShare
from .gateways import ext_authz
from .gateways.probe import ProbeService
from .health import HealthState
from .lifecycle import (
    AUDIT_CLOSE_SECONDS,
    Process,
    StartupError,
    drain,
    run_until_signal,
    start_listeners,
)
from .metrics import Metrics
from .redis import Durability, RedisLayer, RedisUnavailable, VolatileRedis
from .redis.metrics import register as register_redis_metrics
from .reload import PolicyHolder
from .routes import MethodTable
from .settings import MAX_MESSAGE_BYTES, Settings
from .streams import OpenStreams
from .turns import Turns

log = logging.getLogger("proctor.server")

# Imported from here by workers.py and the tests; defined beside the lifecycle they belong to.
__all__ = ["AUDIT_CLOSE_SECONDS", "SERVICE_NAMES", "StartupError", "build_approval_service",
           "grpc_options", "register_services", "serve"]

SERVICE_NAMES = (
    decisions_pb2.DESCRIPTOR.services_by_name["Decisions"].full_name,
    budgets_pb2.DESCRIPTOR.services_by_name["Budgets"].full_name,
    approvals_pb2.DESCRIPTOR.services_by_name["Approvals"].full_name,
    audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)



def grpc_options(settings: Settings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        # Several workers share the port; one worker must not silently share a busy one.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        # HTTP/2 MAX_CONCURRENT_STREAMS: calls past it wait in the client, not in the queue
        # of calls this process accepts one at a time, first come first served (docs/limits.md).
        *([("grpc.max_concurrent_streams", settings.max_calls_per_connection)]
          if settings.max_calls_per_connection else []),
    ]


def register_services(
    server: MethodTable,
    *,
    settings: Settings,
    holder: PolicyHolder,
    audit: Any,
    metrics: Metrics,
    health: HealthState,
    on_reload: Callable[[], None] | None,
    redis: RedisLayer | None = None,
    approval_service: ApprovalsService | None = None,
    turns: Turns | None = None,
) -> tuple[str, ...]:
    """Add every servicer to `server` (a MethodTable); return the service names for reflection.

    Approvals: Redis store with --redis-url (on `redis`, the process's one RedisLayer),
    embedded otherwise; its gate sits in Evaluate (require_approval creates an approval;
    an approved id unlocks its action once).
    """
    if approval_service is None:
        approval_service = build_approval_service(settings, audit, health, redis)
    approval_service.watch.start()
    # Long-lived streams, bounded by --max-streams, end when the process drains.
    streams = OpenStreams(settings.max_streams, settings.max_streams_per_principal)
    health.on_drain(streams.drain)
    fair = (FairShare(settings.fair_share_calls, settings.fair_share_queue, turns)
            if settings.fair_share_calls else None)
    decisions = DecisionsService(
        holder, audit, metrics, sync_audit=settings.audit_durability == "sync",
        approvals=approval_service.gate, name_worker=settings.workers > 1, streams=streams,
        max_batch_items=settings.max_batch_items, max_explain_bytes=settings.max_explain_bytes,
        fair=fair,
    )
    decisions_pb2_grpc.add_DecisionsServicer_to_server(decisions, server)
    # Evaluate takes and gives bytes: server/wire.py decodes and encodes it.
    server.replace(EVALUATE_METHOD, decisions.raw_evaluate_handler())
    server.replace(EVALUATE_STREAM_METHOD, decisions.raw_stream_handler())
    # Gateways (DESIGN section 14): Envoy's Check decides through `decisions`, audited alike;
    # Probe answers the MCP gateway's tools/list ("never allowed?") and records nothing.
    gateway_names = (
        ext_authz.add_to(server, decisions, settings.ext_authz_topic_template),
        probe_pb2.DESCRIPTOR.services_by_name["Probe"].full_name,
    )
    probe_pb2_grpc.add_ProbeServicer_to_server(ProbeService(holder), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminService(
        holder, on_reload, streams, local_evaluation=settings.local_evaluation == "on"), server)
    # Budgets: Redis store with --redis-url (?cluster=1 for Redis Cluster), embedded otherwise;
    # health of proctor.v1.Budgets follows the store (probed every second).
    budget_service = BudgetsService(build_budget_store(settings, redis), holder, audit, health)
    budget_service.watch.start()
    # ReserveBudget takes and gives bytes: server/budgets/answer.py encodes (in C when built).
    budget_service.add_to(server)
    approvals_pb2_grpc.add_ApprovalsServicer_to_server(approval_service, server)
    audit_service = AuditService.from_settings(
        settings, streams, deciding=fair.deciding if fair is not None else None)
    audit_pb2_grpc.add_AuditServicer_to_server(audit_service, server)
    # IngestDecisions: clients' local decisions, recorded into this process's chain.
    server.replace(ingest.METHOD, ingest.DecisionIngest(audit, streams).handler())
    register_audit_metrics(metrics.registry)
    register_redis_metrics(metrics.registry)
    register_approval_metrics(metrics.registry)
    # grpc's stubs type the server as a whole grpc.Server; the generated function calls only
    # add_generic_rpc_handlers and add_registered_method_handlers, which MethodTable has.
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, cast(grpc.Server, server))
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    names = (*SERVICE_NAMES, *gateway_names, health_service, *server_reflection.SERVICE_NAMES)
    server_reflection.enable(server, names)
    return names


def build_approval_service(settings: Settings, audit: Any, health: HealthState,
                           redis: RedisLayer | None) -> ApprovalsService:
    """The approvals of this process, shared by gRPC and the inbox (--http-listen)."""
    return ApprovalsService(
        build_approval_store(settings, redis), audit, health,
        max_waiters=settings.max_approval_waiters,
        max_waiters_per_connection=settings.max_approval_waiters_per_connection,
        max_waiters_per_principal=settings.max_approval_waiters_per_principal)




async def serve(
    settings: Settings,
    *,
    worker: int | None = None,
    supervisor_pid: int | None = None,
) -> int:
    """Run one server process until SIGTERM/SIGINT; return its exit code."""
    proc = await _build(settings, supervisor_pid)
    await start_listeners(proc, worker, SERVICE_NAMES)
    watch = await run_until_signal(proc)
    await drain(proc, watch)
    return 0


async def _build(settings: Settings, supervisor_pid: int | None) -> Process:
    """Policy, credentials, Redis, audit and every servicer, behind the auth guard; StartupError."""
    metrics = Metrics()
    try:
        holder = PolicyHolder.load(
            settings.policy, engine.Limits(max_bytes=settings.max_policy_bytes))
    except engine.PolicyError as e:
        raise StartupError(f"cannot load the policy: {e}") from e
    metrics.policy_loaded(holder.current.policy_version, holder.current.rule_count)
    webhook_secret = _webhook_secret(settings)
    principals = _load_principals(settings)
    jwt_keys = _load_jwks(settings)

    health = HealthState()
    redis = None
    if settings.redis_url:  # one Redis layer for budgets, approvals and the audit (docs/redis.md)
        redis = RedisLayer.from_url(settings.redis_url, durability=Durability(
            settings.redis_allow_rdb, settings.redis_allow_volatile))

    def audit_health(serving: bool) -> None:
        # A sink that cannot write: Decisions NOT_SERVING until it writes again.
        health.set_service(health_names.DECISIONS, serving)

    # Bulk work on the loop (batch slices, the audit writer's bursts) takes turns.
    turns = Turns()
    audit = build_audit(settings, redis=redis, on_health=audit_health, turns=turns)
    audit.start()
    holder.audit = audit
    holder.metrics = metrics

    server = grpc.aio.server(options=grpc_options(settings))
    routes = MethodTable()
    approval_service = build_approval_service(settings, audit, health, redis)
    register_services(
        routes, settings=settings, holder=holder, audit=audit, metrics=metrics,
        health=health, on_reload=_reload_forwarder(supervisor_pid), redis=redis,
        approval_service=approval_service, turns=turns,
    )
    if redis is not None:
        await _start_redis(redis, audit)
    authenticator = Authenticator(principals, mtls=bool(settings.client_ca), jwt=jwt_keys)
    # Every call but health and reflection is authenticated here, and its role checked.
    server.add_generic_rpc_handlers((Guard(routes, authenticator),))
    auth_guard.register(metrics.registry)
    return Process(
        settings=settings, metrics=metrics, holder=holder, principals=principals,
        jwt_keys=jwt_keys, webhook_secret=webhook_secret, health=health, redis=redis,
        audit=audit, server=server, approval_service=approval_service,
        authenticator=authenticator,
    )


def _reload_forwarder(supervisor_pid: int | None) -> Callable[[], None] | None:
    """Admin's Reload in a worker: SIGHUP to the supervisor (None in a single process)."""
    if supervisor_pid is None:
        return None
    pid = supervisor_pid

    def on_reload() -> None:
        # The supervisor forwards SIGHUP to every worker: the reload reaches them all.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)

    return on_reload





def _webhook_secret(settings: Settings) -> bytes:
    """The signing key of the approval webhooks (b"" without webhooks); StartupError."""
    if not settings.approval_webhook:
        return b""
    from .approvals.webhooks import read_secret

    try:
        return read_secret(settings.approval_webhook_secret_file, dict(os.environ))
    except (OSError, ValueError) as e:
        raise StartupError(f"approval webhooks: {e}") from e



def _load_principals(settings: Settings) -> PrincipalsHolder | None:
    if not settings.principals:
        return None
    try:
        return PrincipalsHolder.load(settings.principals)
    except PrincipalsError as e:
        raise StartupError(f"cannot load the principals: {e}") from e


def _load_jwks(settings: Settings) -> JwtVerifier | None:
    if not settings.jwt_jwks:
        return None
    verifier = JwtVerifier(settings.jwt_jwks, settings.jwt_issuer, settings.jwt_audience,
                           refresh_seconds=settings.jwt_refresh_seconds)
    try:
        verifier.load()
    except JwksError as e:
        raise StartupError(f"cannot load --jwt-jwks: {e}") from e
    return verifier



async def _start_redis(redis: RedisLayer, audit: Any) -> None:
    """Check the Redis of budgets and approvals before serving: a refused one (no
    persistence, docs/redis.md) stops the start; an unreachable one does not (the stores
    answer UNAVAILABLE, and are checked when it answers)."""
    try:
        await redis.start()
    except VolatileRedis as e:
        await audit.close()
        raise StartupError(f"--redis-url {redis.where}: {e.message}") from e
    except RedisUnavailable as e:
        log.warning("redis %s not reachable at start (%s): budgets and approvals answer "
                    "UNAVAILABLE until it is", redis.where, e.message)
