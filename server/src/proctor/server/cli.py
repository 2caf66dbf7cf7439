"""proctor: the one console script. Each concern registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that each expose register(subparsers) -> None; every subcommand sets
# func(args) -> int. Kept as names so `proctor eval` does not import grpc.
_COMMAND_MODULES = (
    "proctor.server.serve_cli",  # serve
    "proctor.server.policy_cli",  # check, test, eval
    "proctor.server.audit.cli",  # audit tail|consume|verify|show, replay
    "proctor.server.approvals.cli",  # approvals list|approve|deny
    "proctor.bench.cli",  # bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="proctor", description="Policy decision point for fleets of AI agents."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
