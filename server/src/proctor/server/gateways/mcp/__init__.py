"""`proctor mcp-gateway`: an MCP server that fronts one upstream MCP server (DESIGN section 14).

    proctor mcp-gateway --server 127.0.0.1:50051 --name files --agent claude-desktop \\
        -- python files_server.py

Every `tools/call` is decided by Proctor first (governor.py), `tools/list`
leaves out what the caller can never be allowed, and everything else passes
through (gateway.py). The upstream is launched over stdio or reached over
streamable HTTP (upstream.py); the gateway serves stdio or streamable HTTP.

Only cli.py is imported when the `proctor` command starts: the rest needs the
MCP SDK, the `proctor[mcp]` extra.
"""
