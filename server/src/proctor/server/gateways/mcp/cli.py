"""`proctor mcp-gateway`: flags, and a clear message when the MCP SDK is not installed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_SERVER = "127.0.0.1:50051"
MCP_MISSING = (
    "proctor mcp-gateway: the MCP SDK is not installed. Install it with\n"
    "  pip install 'proctor[mcp]'     (from a checkout: pip install -e '.[mcp]')"
)
EPILOG = """\
examples:
  proctor mcp-gateway --name files --agent desktop -- python files_server.py
  proctor mcp-gateway --name search --agent ci --upstream-url http://127.0.0.1:9000/mcp \\
      --http-listen 127.0.0.1:8765

Every tools/call is evaluated with topic --topic-template and the call's scalar arguments as
labels; deny and unapproved calls come back as tool errors, the upstream never called.
See docs/gateways.md."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "mcp-gateway", help="govern an MCP server's tools with Proctor (needs proctor[mcp])",
        description="An MCP server in front of one upstream MCP server: Proctor decides "
        "every tools/call (allow, deny, or wait for a reviewer), tools/list leaves out what "
        "the caller can never be allowed, everything else passes through.",
        epilog=EPILOG,
    )
    g = p.add_argument_group("Proctor")
    g.add_argument("--server", default=DEFAULT_SERVER, metavar="HOST:PORT",
                   help="the Proctor to ask")
    g.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="deadline of each call to Proctor (retries included)")
    g.add_argument("--token-file", default=None, metavar="FILE",
                   help="bearer token for Proctor (default: $PROCTOR_TOKEN, $PROCTOR_TOKEN_FILE)")
    g.add_argument("--tls", action="store_true", help="TLS to Proctor, the system's roots")
    g.add_argument("--tls-root", default=None, metavar="PEM", help="CA to verify Proctor with")
    g.add_argument("--tls-cert", default=None, metavar="PEM", help="client certificate (mTLS)")
    g.add_argument("--tls-key", default=None, metavar="PEM", help="client key (mTLS)")
    g = p.add_argument_group("the calls")
    g.add_argument("--name", required=True,
                   help="the upstream's name in topics (fixed here, never taken from the "
                   "upstream, so it cannot rename itself out of a rule)")
    g.add_argument("--agent", default="", metavar="ID",
                   help="the acting agent of every call (required unless --http-principals "
                   "names each HTTP caller)")
    g.add_argument("--tenant", default="", help="the tenant of every call")
    g.add_argument("--run-id", default="", help="the run of every call")
    g.add_argument("--topic-template", default="mcp.{name}.{tool}",
                   help="topic of a tool call, from {name} and {tool}")
    g.add_argument("--risk-tag", action="append", default=[], metavar="TAG",
                   help="a risk tag on every call (repeatable)")
    g.add_argument("--tool-risk-tags", action="append", default=[], metavar="TOOL=TAG[,TAG]",
                   help="risk tags on one tool's calls (repeatable)")
    g.add_argument("--approval-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long a call that needs approval waits for a reviewer (0: answer "
                   "at once with the approval id)")
    g.add_argument("--budget-unit", default="", metavar="UNIT",
                   help="reserve --budget-amount of this unit around every allowed call "
                   "(default: off)")
    g.add_argument("--budget-amount", type=int, default=1, metavar="N",
                   help="amount reserved per call with --budget-unit")
    g = p.add_argument_group("serving")
    g.add_argument("--http-listen", default="", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    g.add_argument("--http-principals", default="", metavar="FILE",
                   help="HTTP callers' bearer tokens (the principals YAML of DESIGN section 12); "
                   "each caller's id becomes its agent")
    g.add_argument("--http-tls-cert", default="", metavar="PEM", help="HTTPS certificate")
    g.add_argument("--http-tls-key", default="", metavar="PEM", help="HTTPS key")
    g.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   default="warning", help="log level (logs go to stderr)")
    g = p.add_argument_group("the upstream")
    g.add_argument("--upstream-url", default="", metavar="URL",
                   help="a streamable-HTTP MCP server, instead of a command after --")
    g.add_argument("--upstream-start-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long the upstream may take to start and initialize")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- CMD ARGS...: the upstream MCP server to launch over stdio")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, config_from

    try:
        config = config_from(args)
    except ConfigError as e:
        print(f"proctor mcp-gateway: error: {e}", file=sys.stderr)
        return 2
    try:
        from . import app
    except ImportError as e:
        if (e.name or "").split(".")[0] in ("mcp", "mcp_types", "pydantic", "anyio", "uvicorn"):
            print(MCP_MISSING, file=sys.stderr)
            return 2
        raise
    return app.main(config, args.log_level)
