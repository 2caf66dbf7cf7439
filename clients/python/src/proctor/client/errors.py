"""Exceptions the Proctor client raises."""

from __future__ import annotations

import grpc


class ProctorError(Exception):
    """A call to Proctor failed; `code` is the gRPC status code, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, method: str = "") -> None:
        self.code = code
        self.details = details
        self.method = method
        # How many attempts the client made before giving up (retries included).
        self.attempts = 1
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {details}")


class InvalidRequestError(ProctorError):
    """The server refused the request as INVALID_ARGUMENT (the message names the field).

    Never turned into a fail-closed deny: a malformed request is a bug in the caller.
    """


class ProctorUnavailableError(ProctorError):
    """No answer: the server could not be reached or the deadline passed (after retries)."""


TRANSPORT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


def from_rpc_error(error: grpc.RpcError, method: str) -> ProctorError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or str(code)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequestError(code, details, method)
    if code in TRANSPORT_CODES:
        return ProctorUnavailableError(code, details, method)
    return ProctorError(code, details, method)
