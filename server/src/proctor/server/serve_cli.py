"""`proctor serve`: run the gRPC service."""

from __future__ import annotations

import argparse
import errno
import socket
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
    taken = _address_in_use(settings)
    if taken:
        print(f"proctor serve: error: --listen {settings.listen}: {taken}", file=sys.stderr)
        return 1
    from .workers import run as run_workers

    return run_workers(settings)


def _address_in_use(settings: Settings) -> str:
    """Say so once, before anything starts, when another process holds the port.

    gRPC would only report a bind failure after the stores and the audit had started,
    with its own log line beside ours. A bind without SO_REUSEPORT tells early; the
    socket is closed at once, so the server's own bind follows.
    """
    host, port = settings.listen_host, settings.listen_port
    if port == 0:
        return ""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"cannot resolve {host}: {e.strerror or e}"
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC does: connections of an earlier run in TIME_WAIT do not hold the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return "address already in use (another process listens on this port)"
                return f"cannot bind: {e.strerror or e}"
    return ""
