"""Request bytes -> messages for every method: a malformed request is INVALID_ARGUMENT.

grpc.aio parses a request with the method's deserializer before the servicer
runs; when protobuf's parser refuses the bytes it answers UNKNOWN and logs a
traceback. `guard` hands a unary-request method its bytes instead and parses
them with the same generated parser: bytes it refuses are answered
INVALID_ARGUMENT, naming the message type and the parser's reason, and logged
as one line at most every `LOG_INTERVAL_S` seconds (with the count of the
others). Stream-request methods (EvaluateStream, IngestDecisions) take bytes
already and answer a bad item themselves.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeAlias

import grpc

from . import logs

log = logging.getLogger("proctor.server.requests")

# grpc's classes are not subscriptable at run time: the aliases are strings.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

LOG_INTERVAL_S = 10.0


class Throttled:
    """One log line per `interval` seconds at most; the line counts the ones left out."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._dropped = 0

    def warning(self, msg: str, **fields: Any) -> bool:
        """Log `msg` now if the last line is `interval` old; True when it was written."""
        now = self._clock()
        if now < self._next:
            self._dropped += 1
            return False
        self._next = now + self._interval
        logs.event(self._logger, logging.WARNING, msg, **fields, not_logged=self._dropped)
        self._dropped = 0
        return True


_refused = Throttled(log)


def message_name(parse: Callable[[bytes], Any]) -> str:
    """The protobuf type a generated `FromString` parses ("proctor.v1.GetPolicyRequest")."""
    owner = getattr(parse, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "")
    return name if isinstance(name, str) and name else "request"


async def refuse(context: Context, method: str, what: str,
                 error: Exception) -> NoReturn:
    """Answer INVALID_ARGUMENT for bytes that are not a `what`; one throttled log line."""
    reason = str(error) or type(error).__name__
    _refused.warning("malformed request", method=method, message=what, error=reason)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"request: not a valid {what} ({reason})")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def guard(method: str, handler: Handler) -> Handler:
    """`handler` taking bytes and parsing them itself; unchanged when it takes bytes already,
    streams its requests, or is not a coroutine (grpc runs those in its executor)."""
    parse = handler.request_deserializer
    if parse is None or handler.request_streaming:
        return handler
    what = message_name(parse)
    serialize = handler.response_serializer
    if handler.unary_unary is not None and inspect.iscoroutinefunction(handler.unary_unary):
        unary: Any = handler.unary_unary  # called with grpc.aio's context

        async def unary_unary(data: bytes, context: Context) -> Any:
            try:
                request = parse(data)
            except Exception as e:  # whatever the parser raises, the bytes are the cause
                await refuse(context, method, what, e)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, response_serializer=serialize)
    stream: Any = handler.unary_stream
    if stream is not None and inspect.isasyncgenfunction(stream):

        async def unary_stream(data: bytes, context: Context
                               ) -> AsyncIterator[Any]:
            try:
                request = parse(data)
            except Exception as e:
                await refuse(context, method, what, e)
            async for item in stream(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, response_serializer=serialize)
    if stream is not None and inspect.iscoroutinefunction(stream):

        async def unary_writer(data: bytes, context: Context) -> None:
            try:
                request = parse(data)
            except Exception as e:
                await refuse(context, method, what, e)
            await stream(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_writer, response_serializer=serialize)
    return handler
