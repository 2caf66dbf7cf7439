"""Run the gateway: check the flags, connect the upstream, serve stdio or streamable HTTP.

Start-up fails (exit 1) when the upstream cannot be started: an MCP client
then shows the error at once. Proctor is not needed to start: every call is
refused (fail closed) while it is unreachable, and served again when it is back.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import grpc
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from proctor.client import AsyncProctorClient

from ...settings import SettingsError, split_host_port
from .callers import CallersError, PrincipalTokens, load_callers
from .gateway import Gateway
from .governor import Caller, Governor
from .mapping import ToolMapping
from .upstream import Upstream, UpstreamGone, UpstreamSpec

log = logging.getLogger("proctor.mcp_gateway")
PROG = "proctor mcp-gateway"
HTTP_PATH = "/mcp"


class ConfigError(ValueError):
    """A flag or combination of flags the gateway refuses; the message names it."""


@dataclass(frozen=True, slots=True)
class Config:
    upstream: UpstreamSpec
    server: str
    name: str
    agent: str
    tenant: str
    run_id: str
    mapping: ToolMapping
    approval_wait: float
    budget_unit: str
    budget_amount: int
    timeout: float
    http_listen: str = ""
    callers: PrincipalTokens | None = None
    http_tls: tuple[str, str] = ("", "")
    metadata: tuple[tuple[str, str], ...] = ()
    credentials: grpc.ChannelCredentials | None = field(default=None, repr=False)


def config_from(args: argparse.Namespace) -> Config:
    """The gateway's configuration, or ConfigError naming the flag."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if bool(command) == bool(args.upstream_url):
        raise ConfigError("give the upstream either as a command after -- (stdio) or as "
                          "--upstream-url URL (streamable HTTP), not both or neither")
    if args.upstream_url and not args.upstream_url.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream-url must be an http:// or https:// URL, "
                          f"got {args.upstream_url!r}")
    if not args.http_principals and not args.agent:
        raise ConfigError("--agent ID is required (the acting agent of every call), unless "
                          "--http-principals names each HTTP caller")
    if args.approval_wait < 0 or args.timeout <= 0 or args.upstream_start_timeout <= 0:
        raise ConfigError("--approval-wait must not be negative; --timeout and "
                          "--upstream-start-timeout must be positive")
    if args.budget_amount < 1:
        raise ConfigError("--budget-amount must be at least 1")
    try:
        split_host_port(args.server, "--server")
        mapping = ToolMapping(args.name, args.topic_template, args.risk_tag,
                              _tool_tags(args.tool_risk_tags))
        mapping.topic("probe")
    except (SettingsError, ValueError) as e:
        raise ConfigError(str(e)) from None
    callers = None
    if args.http_principals:
        if not args.http_listen:
            raise ConfigError("--http-principals needs --http-listen (over stdio the caller "
                              "is --agent)")
        try:
            callers = PrincipalTokens(load_callers(args.http_principals))
        except CallersError as e:
            raise ConfigError(f"--http-principals {e}") from None
    http_tls = (args.http_tls_cert, args.http_tls_key)
    if bool(http_tls[0]) != bool(http_tls[1]):
        raise ConfigError("--http-tls-cert and --http-tls-key go together")
    if args.http_listen:
        try:
            host, _ = split_host_port(args.http_listen, "--http-listen")
        except SettingsError as e:
            raise ConfigError(str(e)) from None
        if not _loopback(host) and not (callers and http_tls[0]):
            raise ConfigError(
                f"--http-listen {args.http_listen}: off loopback the gateway needs "
                "--http-principals (who calls) and --http-tls-cert/--http-tls-key (tokens "
                "only over TLS); otherwise anyone who reaches it acts as --agent")
    metadata, credentials = _proctor_credentials(args)
    return Config(
        upstream=UpstreamSpec(tuple(command), args.upstream_url, args.upstream_start_timeout),
        server=args.server, name=args.name, agent=args.agent, tenant=args.tenant,
        run_id=args.run_id, mapping=mapping, approval_wait=args.approval_wait,
        budget_unit=args.budget_unit, budget_amount=args.budget_amount, timeout=args.timeout,
        http_listen=args.http_listen, callers=callers, http_tls=http_tls,
        metadata=metadata, credentials=credentials,
    )


def _tool_tags(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        tool, sep, tags = spec.partition("=")
        if not sep or not tool:
            raise ConfigError(f"--tool-risk-tags must be TOOL=TAG[,TAG], got {spec!r}")
        out.setdefault(tool, []).extend(t for t in tags.split(",") if t.strip())
    return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _proctor_credentials(args: argparse.Namespace) -> tuple[tuple[tuple[str, str], ...],
                                                             grpc.ChannelCredentials | None]:
    """The bearer token (as `authorization` metadata) and TLS for the Proctor connection.

    The same flags and order as the SDK's credentials on branch `auth` (--token-file,
    $PROCTOR_TOKEN, $PROCTOR_TOKEN_FILE; --tls, --tls-root, --tls-cert, --tls-key): after
    that merge this becomes `AsyncProctorClient(..., **credentials.client_kwargs(args))`.
    """
    token = ""
    source = args.token_file or os.environ.get("PROCTOR_TOKEN_FILE", "")
    if args.token_file or not os.environ.get("PROCTOR_TOKEN", "").strip():
        if source:
            try:
                token = Path(source).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"--token-file {source}: cannot read it ({e})") from None
            if not token:
                raise ConfigError(f"--token-file {source}: the file is empty")
    else:
        token = os.environ["PROCTOR_TOKEN"].strip()
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together (mTLS)")
    credentials = None
    if args.tls or args.tls_root or args.tls_cert:
        try:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(args.tls_root), private_key=_read(args.tls_key),
                certificate_chain=_read(args.tls_cert))
        except OSError as e:
            raise ConfigError(f"TLS files: {e}") from None
    host, _ = split_host_port(args.server, "--server")
    if token and credentials is None and not _loopback(host):
        raise ConfigError(f"a bearer token goes to {args.server} only over TLS: give --tls-root "
                          "(or --tls), or a loopback --server")
    return ((("authorization", f"Bearer {token}"),) if token else ()), credentials


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from(args)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    try:
        return anyio.run(serve, config)
    except KeyboardInterrupt:
        return 130


async def serve(config: Config) -> int:
    client = AsyncProctorClient(config.server, timeout=config.timeout,
                                credentials=config.credentials, metadata=config.metadata)
    governor = Governor(client, config.mapping, approval_wait=config.approval_wait,
                        budget_unit=config.budget_unit, budget_amount=config.budget_amount)
    try:
        async with anyio.create_task_group() as tasks:
            upstream = Upstream(config.upstream, tasks)
            try:
                info = await upstream.start()
            except UpstreamGone as e:
                print(f"{PROG}: error: {e}", file=sys.stderr)
                tasks.cancel_scope.cancel()
                return 1
            gateway = Gateway(upstream, governor, _caller_of(config))
            server = gateway.build_server(f"proctor-gateway:{config.name}", info)
            if config.http_listen:
                await _serve_http(server, config)
            else:
                async with stdio_server() as (read, write):
                    await server.run(read, write, server.create_initialization_options())
            await upstream.close()
            tasks.cancel_scope.cancel()
    finally:
        await client.close()
    return 0


def _caller_of(config: Config) -> Any:
    callers = config.callers
    fixed = Caller((config.agent,), config.tenant, config.run_id)

    def caller_of(ctx: ServerRequestContext[Any, Any]) -> Caller:
        if callers is None:
            return fixed
        token = get_access_token()
        if token is None:  # the bearer middleware lets no such request through
            raise MCPError(-32001, "no caller identity on this request")
        return Caller((token.client_id,), callers.tenant_of(token.client_id, config.tenant),
                      config.run_id)

    return caller_of


async def _serve_http(server: Any, config: Config) -> None:
    import uvicorn

    host, port = split_host_port(config.http_listen, "--http-listen")
    scheme = "https" if config.http_tls[0] else "http"
    auth = None
    if config.callers is not None:
        auth = AuthSettings(issuer_url=f"{scheme}://{config.http_listen}",  # type: ignore[arg-type]
                            resource_server_url=None)
    app = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host, auth=auth,
                                     token_verifier=config.callers)
    cert, key = config.http_tls
    uv = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level="warning", ssl_certfile=cert or None,
        ssl_keyfile=key or None, lifespan="on"))
    log.warning("serving MCP at %s://%s%s", scheme, config.http_listen, HTTP_PATH)
    await uv.serve()
