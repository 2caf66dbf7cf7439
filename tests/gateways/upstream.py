"""The upstream MCP server of the gateway tests, on the SDK's MCPServer.

    python upstream.py RECORD_FILE

Every tool call it receives is appended to RECORD_FILE as a JSON line (tool,
arguments, pid), so a test reads what reached the upstream: nothing on a deny,
exactly one call after an approval, a new pid after a crash. `crash` records,
then exits the process at once. An extension method `example/echo` answers
its params back, to show that the gateway forwards what it does not know.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import MCPServer
from mcp_types import RequestParams

RECORD = sys.argv[1]


def record(tool: str, **arguments: Any) -> None:
    with open(RECORD, "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments, "pid": os.getpid()}) + "\n")


async def echo_method(ctx: ServerRequestContext[Any, Any], params: Any) -> dict[str, Any]:
    return {"echoed": dict(ctx.params or {})}


class EchoExtension(Extension):
    identifier = "com.example/echo"

    def methods(self) -> list[MethodBinding]:
        return [MethodBinding("example/echo", RequestParams, echo_method)]


mcp = MCPServer("test-upstream", extensions=[EchoExtension()])


@mcp.tool()
def echo(text: str, env: str = "", big: str = "", n: int = 0,
         nested: dict[str, Any] | None = None) -> str:
    """Say `text` back."""
    record("echo", text=text, env=env, n=n)
    return f"echo: {text}"


@mcp.tool()
def wipe(target: str) -> str:
    """Wipe everything (the policy never allows it)."""
    record("wipe", target=target)
    return "wiped"


@mcp.tool()
def send(to: str) -> str:
    """Send a message (needs approval)."""
    record("send", to=to)
    return f"sent to {to}"


@mcp.tool()
def spend(item: str) -> str:
    """Buy something (allowed, within the budget)."""
    record("spend", item=item)
    return f"bought {item}"


@mcp.tool()
def crash() -> str:
    """Exit the upstream process in the middle of the call."""
    record("crash")
    os._exit(3)


@mcp.resource("memo://{name}")
def memo(name: str) -> str:
    """A memo's text."""
    return f"memo {name}"


@mcp.prompt()
def greet(who: str) -> str:
    """A greeting prompt."""
    return f"Say hello to {who}."


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "http":
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[3]))
    else:
        mcp.run()
