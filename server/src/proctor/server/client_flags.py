"""The credential flags of every command that calls a server, without importing grpc.

`add_arguments` declares --token-file ($PROCTOR_TOKEN), --tls-ca, --tls-cert and
--tls-key (as proctor.client.credentials does); `open_channel` opens the channel
through proctor.client.credentials, imported only then.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-file", default=None,
        help="file holding the bearer token (default: $PROCTOR_TOKEN, if set)")
    parser.add_argument("--tls-ca", default=None, help="CA certificate to trust (PEM): use TLS")
    parser.add_argument("--tls-cert", default=None, help="client certificate for mTLS (PEM)")
    parser.add_argument("--tls-key", default=None, help="client private key for mTLS (PEM)")


def open_channel(target: str, args: argparse.Namespace) -> Any:
    """A grpc.Channel to `target` sending the arguments' token, over TLS when asked."""
    from proctor.client import credentials

    return credentials.open_channel(target, args)


def has_credential(args: argparse.Namespace) -> bool:
    """A token (file or $PROCTOR_TOKEN) or a client certificate is given."""
    from proctor.client import credentials

    return bool(credentials.call_metadata(args) or getattr(args, "tls_cert", None))
