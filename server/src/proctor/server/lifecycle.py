"""The serve lifecycle of one built server process: listen, run, drain.

main.py builds a `Process` (policy, credentials, Redis, audit, every servicer);
here it binds its gRPC port and starts metrics, webhooks and the inbox
(`start_listeners`), installs the signal handlers and watches and waits for
SIGTERM/SIGINT (`run_until_signal`), then drains (`drain`): health NOT_SERVING,
no new calls, in-flight calls finish within the grace period, the audit is
closed, Redis let go.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from . import health as health_names
from . import logs
from .approvals.service import ApprovalsService
from .auth import Authenticator, PrincipalsHolder
from .auth.jwt_keys import JwtVerifier
from .health import HealthState
from .metrics import Metrics
from .redis import RedisLayer
from .reload import PolicyHolder
from .settings import Settings, split_host_port

log = logging.getLogger("proctor.server")

# After the grace period, how long SIGTERM waits for the audit to store what is queued.
AUDIT_CLOSE_SECONDS = 10.0


class StartupError(Exception):
    """The process cannot start: a bad policy, a port in use, unreadable TLS files."""


@dataclass
class Process:
    """What one server process builds at start-up and tears down on SIGTERM."""

    settings: Settings
    metrics: Metrics
    holder: PolicyHolder
    principals: PrincipalsHolder | None
    jwt_keys: JwtVerifier | None
    webhook_secret: bytes
    health: HealthState
    redis: RedisLayer | None
    audit: Any
    server: grpc.aio.Server
    approval_service: ApprovalsService
    authenticator: Authenticator
    port: int = 0
    webhooks: Any = None
    inbox: Any = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)


async def start_listeners(proc: Process, worker: int | None, services: tuple[str, ...]) -> None:
    """Bind and start gRPC, then metrics, webhooks and the inbox; StartupError.

    `services`: the names health answers for from the start (main.SERVICE_NAMES).
    """
    settings, server, audit, health = proc.settings, proc.server, proc.audit, proc.health
    try:
        proc.port = _bind(server, settings)
    except (RuntimeError, OSError) as e:
        await audit.close()
        raise StartupError(f"cannot listen on {settings.listen}: {e}") from e

    await health.start(services)
    await server.start()
    await health.policy_loaded()
    # Embedded stores live in this process and are always reachable.
    if settings.embedded_stores:
        health.set_service(health_names.BUDGETS, True)
        health.set_service(health_names.APPROVALS, True)

    if settings.metrics_listen:
        mhost, mport = split_host_port(settings.metrics_listen, "--metrics-listen")
        mport = mport + (worker or 0) if mport else 0
        try:
            proc.metrics.serve(mhost, mport)
        except OSError as e:
            await server.stop(0)
            await audit.close()
            raise StartupError(f"cannot serve metrics on {mhost}:{mport}: {e}") from e

    if settings.approval_webhook:
        proc.webhooks = _start_webhooks(settings, proc.approval_service, proc.webhook_secret)
    if settings.http_listen:
        from .inbox import start_inbox

        try:
            proc.inbox = await start_inbox(
                settings, proc.approval_service, proc.holder, proc.authenticator)
        except OSError as e:
            await server.stop(0)
            await audit.close()
            raise StartupError(f"cannot serve the inbox on {settings.http_listen}: {e}") from e


async def run_until_signal(proc: Process) -> asyncio.Task[None]:
    """Signal handlers and watches, the "serving" line, then wait for SIGTERM/SIGINT.

    Returns the policy-file watch, cancelled by `drain`.
    """
    loop = asyncio.get_running_loop()
    settings, holder, principals = proc.settings, proc.holder, proc.principals
    stop = asyncio.Event()

    def on_term() -> None:
        stop.set()

    def on_hup() -> None:
        holder.request("sighup")  # joins the next reload; any number of SIGHUPs cost one
        if principals is not None:
            task = loop.create_task(principals.reload("sighup"))
            proc.background.add(task)
            task.add_done_callback(proc.background.discard)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    watch = loop.create_task(holder.watch(settings.reload_poll_seconds))
    if principals is not None:
        proc.background.add(loop.create_task(principals.watch(settings.reload_poll_seconds)))
    if proc.jwt_keys is not None:  # keys fetched again off the request path
        proc.background.add(loop.create_task(proc.jwt_keys.run()))

    logs.event(
        log, logging.INFO, "serving",
        listen=f"{settings.listen_host}:{proc.port}", policy=settings.policy,
        policy_version=holder.current.policy_version, rules=holder.current.rule_count,
        metrics=settings.metrics_listen or None, tls=settings.tls,
        callers=_callers(settings, proc.authenticator),
        inbox=proc.inbox.url if proc.inbox is not None else None,
        approval_webhooks=len(settings.approval_webhook) or None,
        # The C extensions in use: none since issue 21 (docs/performance.md, "Native
        # code"); the field stays so a log reader need not guess.
        extensions="none",
    )
    # What start-up built lives as long as the process (the compiled policy above all:
    # millions of objects at 100,000 rules). Frozen, no garbage collection walks it again,
    # so full collections stay short however large the policy.
    gc.collect()
    gc.freeze()
    await stop.wait()
    return watch


async def drain(proc: Process, watch: asyncio.Task[None]) -> None:
    """SIGTERM: health NOT_SERVING, no new calls, in-flight ones get the grace period,
    then the audit is closed (bounded) and Redis let go."""
    settings = proc.settings
    logs.event(log, logging.INFO, "draining", grace_seconds=settings.grace_seconds)
    proc.metrics.draining.set(1)
    proc.holder.close()  # never waits on a compile: a running one is abandoned
    await proc.health.drain()
    watch.cancel()
    if proc.inbox is not None:
        await proc.inbox.stop()
    await proc.server.stop(settings.grace_seconds)
    if proc.webhooks is not None:
        await proc.webhooks.close()
    for task in list(proc.background):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    # Bounded whatever the disk does: what cannot be stored by then is logged as lost.
    await proc.audit.close(AUDIT_CLOSE_SECONDS)
    if proc.redis is not None:
        await proc.redis.close()
    logs.event(log, logging.INFO, "stopped")


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    if settings.tls:
        key = Path(settings.tls_key).read_bytes()
        cert = Path(settings.tls_cert).read_bytes()
        ca = Path(settings.client_ca).read_bytes() if settings.client_ca else None
        creds = grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
        )
        port = server.add_secure_port(settings.listen, creds)
    else:
        port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError("bind failed")
    return port


def _start_webhooks(settings: Settings, approvals: ApprovalsService, secret: bytes) -> Any:
    """Deliver approval steps to --approval-webhook URLs (approvals/webhooks.py)."""
    from .approvals.webhooks import Webhooks

    webhooks = Webhooks(tuple(settings.approval_webhook), secret, settings.inbox_link)
    webhooks.start()
    approvals.feed.subscribe(webhooks.on_step)
    return webhooks


def _callers(settings: Settings, authenticator: Authenticator) -> str:
    """How callers are told apart, for the start-up log line."""
    if authenticator.development:
        return ("development mode: no --principals, --client-ca or --jwt-jwks, so every "
                "caller is an anonymous admin (loopback only)")
    ways = [name for name, on in (("bearer tokens", settings.principals),
                                  ("mTLS", settings.client_ca),
                                  ("JWT", settings.jwt_jwks)) if on]
    return ", ".join(ways)
