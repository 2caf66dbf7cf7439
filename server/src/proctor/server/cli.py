"""proctor: the one console script. Each concern registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# Modules that each expose register(subparsers) -> None; every subcommand sets
# func(args) -> int. Kept as names so `proctor eval` does not import grpc.
_COMMAND_MODULES = (
    "proctor.server.serve_cli",  # serve
    "proctor.server.policy_cli",  # check, test, eval
    "proctor.server.audit.cli",  # audit tail|consume|verify|show, replay
    "proctor.server.approvals.cli",  # approvals list|approve|deny
    "proctor.server.principals_cli",  # principals hash|add
    "proctor.server.gateways.mcp.cli",  # mcp-gateway (imports the MCP SDK only when run)
)
# The load harness is its own distribution (benchmarks/, proctor-bench), not part of serving.
_BENCH_MODULE = "proctor.bench.cli"
BENCH_MISSING = (
    "proctor bench: the load harness is not installed. Install it with\n"
    "  pip install 'proctor[bench]'     (from a checkout: pip install -e ./benchmarks)"
)


def _version() -> str:
    try:
        return version("proctor")
    except PackageNotFoundError:
        return "unknown"


def _register_bench(sub: Any) -> None:
    try:
        module = importlib.import_module(_BENCH_MODULE)
    except ImportError:
        p = sub.add_parser("bench", help="load harness (needs: pip install 'proctor[bench]')",
                           add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda args: _bench_missing())
        return
    module.register(sub)


def _bench_missing() -> int:
    print(BENCH_MISSING, file=sys.stderr)
    return 2


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and shows each flag's default when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default in (None, "", False, [], argparse.SUPPRESS)
            or "%(default)" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: subparsers inherit the class, so all show defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="proctor", description="Policy decision point for fleets of AI agents."
    )
    parser.add_argument("--version", action="version", version=f"proctor {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _register_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
