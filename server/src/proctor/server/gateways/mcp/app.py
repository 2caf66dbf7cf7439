"""Run the gateway: connect the upstream, serve stdio or streamable HTTP.

Start-up fails (exit 1) when the upstream cannot be started: an MCP client
then shows the error at once. Proctor is not needed to start: every call is
refused (fail closed) while it is unreachable, and served again when it is back.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import anyio
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

from proctor.client import AsyncProctorClient

from ...settings import split_host_port
from .config import Config
from .gateway import Gateway
from .governor import Caller, Governor
from .upstream import Upstream, UpstreamGone

log = logging.getLogger("proctor.mcp_gateway")
PROG = "proctor mcp-gateway"
HTTP_PATH = "/mcp"


def main(config: Config, log_level: str) -> int:
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
            log.info("the downstream connection closed: stopping the upstream")
            await upstream.close()
            tasks.cancel_scope.cancel()
    finally:
        await client.close()
    log.info("stopped")
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
