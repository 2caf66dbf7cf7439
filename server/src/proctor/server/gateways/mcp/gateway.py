"""The gateway's MCP server: the upstream's surface, with Proctor asked before every tool call.

Built on the SDK's low-level `Server`, with a handler per method the upstream
offers (its capabilities decide which, so the gateway advertises what the
upstream has; the tool methods always, so that no tools/call can reach the
upstream but through the governor):

- `tools/call`: governor.admit, then the upstream once if admitted, the budget
  settled after. Refused: a tool result with `isError` and the reason; the
  upstream is not called.
- `tools/list`: the upstream's list, less the tools this caller can never be
  allowed (Probe.ProbeTopics: a deny every request of that topic gets, whatever
  its tags and labels; engine/probe.py says when that is provable). The rest
  pass through as the upstream sent them, schemas and all. Proctor unreachable:
  an error (fail closed), not a list.
- resources, prompts, completion, logging: forwarded as they are.
- Anything else (a method the gateway does not know: an extension's, a newer
  revision's) is forwarded by `ForwardUnknown`, a server middleware that runs
  before the SDK would answer "method not found"; so are notifications outside
  the spec. Nothing is dropped.

Not relayed in this version: requests the upstream sends to the client
(sampling, elicitation, roots) and its notifications (progress, logging,
list_changed). The gateway declares no client capabilities upstream, so a
well-behaved upstream does not ask.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types.methods import SPEC_CLIENT_NOTIFICATION_METHODS

from proctor.client import ProctorError

from .governor import Admission, Caller, Governor
from .upstream import Upstream, UpstreamGone

log = logging.getLogger("proctor.mcp_gateway")

# method -> the params model the SDK validates it against, per upstream capability.
_FORWARDED: dict[str, tuple[tuple[str, type[types.RequestParams]], ...]] = {
    "resources": (("resources/list", types.PaginatedRequestParams),
                  ("resources/templates/list", types.PaginatedRequestParams),
                  ("resources/read", types.ReadResourceRequestParams)),
    "prompts": (("prompts/list", types.PaginatedRequestParams),
                ("prompts/get", types.GetPromptRequestParams)),
    "completions": (("completion/complete", types.CompleteRequestParams),),
    "logging": (("logging/setLevel", types.SetLevelRequestParams),),
}
CallerOf = Callable[[ServerRequestContext[Any, Any]], Caller]


def error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                is_error=True)


class Gateway:
    """The handlers: one governor, one upstream, a way to tell who is calling."""

    def __init__(self, upstream: Upstream, governor: Governor, caller_of: CallerOf) -> None:
        self.upstream = upstream
        self.governor = governor
        self.caller_of = caller_of

    async def call_tool(self, ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> HandlerResult:
        caller = self.caller_of(ctx)

        async def progress(message: str) -> None:
            await ctx.session.report_progress(0, None, message)

        admission = await self.governor.admit(params.name, params.arguments, caller, progress)
        if not admission.allowed:
            log.info("tool call refused: %s (%s)", params.name, admission.why)
            return error_result(admission.why)
        return await self._run(ctx, params.name, admission)

    async def _run(self, ctx: ServerRequestContext[Any, Any], tool: str,
                   admission: Admission) -> HandlerResult:
        ran = False
        try:
            result = await self.upstream.request("tools/call", ctx.params)
            ran = True
            return result
        except UpstreamGone as e:
            return error_result(f"The tool {tool!r} was allowed, but {e}.")
        except MCPError:
            ran = True  # the upstream answered (with an error): the call was made
            raise
        finally:
            await self.governor.settle(admission, ran)

    async def list_tools(self, ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams) -> HandlerResult:
        listed = await self.forward(ctx, params)
        tools = listed.get("tools")
        if not isinstance(tools, list):
            return listed
        names = [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
        try:
            hidden = await self.governor.never_allowed(names, self.caller_of(ctx))
        except ProctorError as e:
            raise MCPError(types.INTERNAL_ERROR,
                           f"Proctor could not be reached to filter tools/list ({e.code.name}: "
                           f"{e.details}); the gateway fails closed") from None
        return {**listed, "tools": [t for t in tools
                                    if not (isinstance(t, dict) and t.get("name") in hidden)]}

    async def forward(self, ctx: ServerRequestContext[Any, Any], params: Any = None) -> \
            dict[str, Any]:
        """Send the request on as it came; the upstream's result as it answered."""
        return await forward(self.upstream, ctx.method, ctx.params)

    def build_server(self, name: str, info: types.InitializeResult) -> Server[Any]:
        """The SDK server with this gateway's handlers for what the upstream offers."""
        caps = info.capabilities
        server: Server[Any] = Server(
            name, version=info.server_info.version, title=info.server_info.title,
            instructions=info.instructions)
        # Always, whatever the upstream advertises: a tools/call must never reach the
        # upstream ungoverned through ForwardUnknown.
        server.add_request_handler("tools/list", types.PaginatedRequestParams, self.list_tools)
        server.add_request_handler("tools/call", types.CallToolRequestParams, self.call_tool)
        for capability, methods in _FORWARDED.items():
            if getattr(caps, capability, None) is None:
                continue
            for method, params_type in methods:
                server.add_request_handler(method, params_type, self.forward)
        # The upstream's extensions (SEP-2133) are advertised as its own: their methods are
        # forwarded by ForwardUnknown.
        server.extensions = dict(caps.extensions or {})
        server.middleware.append(ForwardUnknown(server, self.upstream))
        return server


async def forward(upstream: Upstream, method: str,
                  params: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return await upstream.request(method, params)
    except UpstreamGone as e:
        raise MCPError(types.INTERNAL_ERROR, str(e)) from None


class ForwardUnknown:
    """Server middleware: a request no handler serves goes to the upstream, as does a
    notification outside the spec (see the module docstring)."""

    def __init__(self, server: Server[Any], upstream: Upstream) -> None:
        self.server = server
        self.upstream = upstream

    async def __call__(self, ctx: ServerRequestContext[Any, Any],
                       call_next: CallNext) -> HandlerResult:
        method = ctx.method
        if ctx.request_id is None:
            if method not in SPEC_CLIENT_NOTIFICATION_METHODS:
                await self.upstream.notify(method, ctx.params)
                return None
            return await call_next(ctx)
        if method != "initialize" and self.server.get_request_handler(method) is None:
            return await forward(self.upstream, method, ctx.params)
        return await call_next(ctx)
