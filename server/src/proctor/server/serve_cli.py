"""`proctor serve`: run the gRPC service."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .settings import Settings, SettingsError, add_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC service",
        description="Serve Decisions, Admin, health and reflection over gRPC; "
        "reload the policy on file change, SIGHUP or Admin.ReloadPolicy.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_args(args).validate()
    except SettingsError as e:
        print(f"proctor serve: error: {e}", file=sys.stderr)
        return 2
    from .workers import run as run_workers

    return run_workers(settings)
