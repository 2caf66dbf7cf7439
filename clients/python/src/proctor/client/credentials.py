"""Credentials for command-line tools: a bearer token and TLS files on every channel.

`add_arguments(parser)` declares --token-file, --tls-ca, --tls-cert and
--tls-key; `open_channel(target, args)` opens a channel that sends the token
(from --token-file, else $PROCTOR_TOKEN) as `authorization: Bearer` on every
call and speaks TLS when any TLS file is given. `call_metadata(args)` is the
same metadata for code that passes it per call (asyncio load generators).

Declaring the flags imports nothing heavy: grpc is imported when a channel is
opened, so commands that never call a server (`proctor eval`) stay light.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

__all__ = ["add_arguments", "call_metadata", "open_aio_channel", "open_channel"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--token-file and the TLS files, as every command that calls a server takes them."""
    parser.add_argument(
        "--token-file", default=None,
        help="file holding the bearer token (default: $PROCTOR_TOKEN, if set)")
    parser.add_argument("--tls-ca", default=None, help="CA certificate to trust (PEM): use TLS")
    parser.add_argument("--tls-cert", default=None, help="client certificate for mTLS (PEM)")
    parser.add_argument("--tls-key", default=None, help="client private key for mTLS (PEM)")


def call_metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """The `authorization` metadata of the parsed arguments (() without a token)."""
    from ._base import bearer_metadata

    return bearer_metadata(None, getattr(args, "token_file", None))


def channel_credentials(args: argparse.Namespace) -> Any:
    """grpc.ChannelCredentials of the TLS files, None without any."""
    from ._base import tls_credentials

    return tls_credentials(getattr(args, "tls_ca", None), getattr(args, "tls_cert", None),
                           getattr(args, "tls_key", None))


def open_channel(target: str, args: argparse.Namespace,
                 options: Iterable[tuple[str, Any]] = ()) -> Any:
    """A grpc.Channel to `target` carrying the arguments' token and TLS files."""
    import grpc

    creds = channel_credentials(args)
    opts = list(options)
    channel = (grpc.secure_channel(target, creds, options=opts) if creds is not None
               else grpc.insecure_channel(target, options=opts))
    metadata = call_metadata(args)
    if not metadata:
        return channel
    return grpc.intercept_channel(channel, with_metadata(metadata))


def open_aio_channel(target: str, args: argparse.Namespace,
                     options: Iterable[tuple[str, Any]] = ()) -> Any:
    """A grpc.aio.Channel with the arguments' TLS files (pass call_metadata() per call)."""
    import grpc

    creds = channel_credentials(args)
    opts = list(options)
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options=opts)
    return grpc.aio.insecure_channel(target, options=opts)


def with_metadata(metadata: tuple[tuple[str, str], ...]) -> Any:
    """A client interceptor adding fixed metadata (the bearer token) to every call."""
    import grpc

    class Details(grpc.ClientCallDetails):
        def __init__(self, base: Any) -> None:
            self.method = base.method
            self.timeout = base.timeout
            self.metadata = (*(base.metadata or ()), *metadata)
            self.credentials = base.credentials
            self.wait_for_ready = getattr(base, "wait_for_ready", None)
            self.compression = getattr(base, "compression", None)

    class WithMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(Details(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(Details(details), request)

        def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(Details(details), requests)

        def intercept_stream_stream(self, continuation: Any, details: Any,
                                    requests: Any) -> Any:
            return continuation(Details(details), requests)

    return WithMetadata()
