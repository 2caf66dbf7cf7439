"""The gateway's configuration: every flag checked before anything starts (or is imported).

`config_from(args)` turns `proctor mcp-gateway`'s flags into a `Config`, or
raises ConfigError naming the flag. Nothing here needs the MCP SDK, so a bad
flag is reported at once, with or without the `proctor[mcp]` extra.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from ...settings import SettingsError, split_host_port
from .callers import CallersError, PrincipalTokens, load_callers
from .mapping import ToolMapping
from .upstream_spec import UpstreamSpec


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
