"""Decisions.EvaluateStream under `evaluate()`: one long-lived stream shared by every caller.

A unary call from Python costs ~0.5 ms whatever the server does (grpcio's per-call
work); a message on an open bidirectional stream costs about half. `DecisionStream`
(threads) and `AsyncDecisionStream` (asyncio) are callables with a unary stub's
signature, `(request, timeout=, metadata=) -> EvaluateResponse`, so the clients' retry
loop, deadlines and fail-closed apply to them unchanged.

How answers find their callers: the server answers in request order, so each open
stream keeps a FIFO of waiting callers; appending a caller and queueing its request
happen together (under a lock, or with no await between them), and each answer
goes to the caller at the head. A caller whose deadline passes stops waiting; its
answer, when it comes, is dropped.

Reconnecting: when the stream ends or breaks (a server restart), every caller still
waiting on it gets UNAVAILABLE, which the retry loop retries; the next call opens a
new stream. A status the server chose (PERMISSION_DENIED at open, say) is kept.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import grpc

from proctor.v1 import decisions_pb2

Metadata = Sequence[tuple[str, str]]
# Stream failures that say nothing about the request: the caller may try again.
_BROKEN = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
})
_END: Any = object()


class StreamError(grpc.RpcError):
    """A stream failure or an item's error slot, shaped like grpc's call errors."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


def answer_of(item: decisions_pb2.EvaluateBatchItem) -> decisions_pb2.EvaluateResponse:
    """The response in an item's slot, or its error raised as a StreamError."""
    if item.HasField("error"):
        raise StreamError(_status(item.error.code), item.error.message)
    return item.response


def broken(error: BaseException) -> StreamError:
    """What a caller waiting on a stream that ended with `error` gets."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        code = error.code()
        details = (error.details() if hasattr(error, "details") else "") or str(code)
        if code not in _BROKEN:
            return StreamError(code, details)
        return StreamError(grpc.StatusCode.UNAVAILABLE, f"stream broke ({code.name}: {details})")
    return StreamError(grpc.StatusCode.UNAVAILABLE, f"stream broke ({error!r})")


def _deadline_exceeded(timeout: float | None) -> StreamError:
    return StreamError(grpc.StatusCode.DEADLINE_EXCEEDED,
                       f"no answer on the stream within {timeout}s")


class _Waiter:
    __slots__ = ("done", "item", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.item: decisions_pb2.EvaluateBatchItem | None = None
        self.error: StreamError | None = None


class _Open:
    """One open stream: its call, the queue its requests go through, its waiting callers."""

    __slots__ = ("call", "requests", "waiting")

    def __init__(self) -> None:
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.waiting: collections.deque[_Waiter] = collections.deque()
        self.call: Any = None

    def feed(self) -> Iterator[decisions_pb2.EvaluateRequest]:
        while True:
            request = self.requests.get()
            if request is _END:
                return
            yield request


class DecisionStream:
    """EvaluateStream for the blocking client: call it from any number of threads."""

    def __init__(self, method: Callable[..., Any], metadata: Metadata = ()) -> None:
        self._method = method
        self._metadata = tuple(metadata)
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self._closed = False

    def __call__(
        self, request: decisions_pb2.EvaluateRequest, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> decisions_pb2.EvaluateResponse:
        waiter = _Waiter()
        with self._lock:
            if self._closed:
                raise StreamError(grpc.StatusCode.CANCELLED, "the client is closed")
            conn = self._open or self._start(metadata)
            conn.waiting.append(waiter)
            conn.requests.put(request)
        if not waiter.done.wait(timeout):
            raise _deadline_exceeded(timeout)
        if waiter.error is not None:
            raise waiter.error
        assert waiter.item is not None
        return answer_of(waiter.item)

    def _start(self, metadata: Metadata | None) -> _Open:
        conn = _Open()
        conn.call = self._method(conn.feed(), metadata=metadata or self._metadata)
        self._open = conn
        threading.Thread(target=self._read, args=(conn,), name="proctor-stream",
                         daemon=True).start()
        return conn

    def _read(self, conn: _Open) -> None:
        error: StreamError
        try:
            for item in conn.call:
                waiter = conn.waiting.popleft()
                waiter.item = item  # in place before the caller wakes
                waiter.done.set()
        except grpc.RpcError as e:
            error = broken(e)
        else:
            error = StreamError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
        self._fail(conn, error)

    def _fail(self, conn: _Open, error: StreamError) -> None:
        with self._lock:
            if self._open is conn:
                self._open = None
            left = list(conn.waiting)
            conn.waiting.clear()
        conn.requests.put(_END)
        for waiter in left:
            waiter.error = error
            waiter.done.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn = self._open
        if conn is not None:
            conn.call.cancel()


class _AsyncOpen:
    __slots__ = ("call", "requests", "waiting", "reader")

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Any] = asyncio.Queue()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.call: Any = None
        self.reader: asyncio.Task[None] | None = None

    async def feed(self) -> AsyncIterator[decisions_pb2.EvaluateRequest]:
        while True:
            request = await self.requests.get()
            if request is _END:
                return
            yield request


class AsyncDecisionStream:
    """EvaluateStream for the asyncio client: await it from any number of tasks (one loop)."""

    def __init__(self, method: Callable[..., Any], metadata: Metadata = ()) -> None:
        self._method = method
        self._metadata = tuple(metadata)
        self._open: _AsyncOpen | None = None
        self._closed = False

    async def __call__(
        self, request: decisions_pb2.EvaluateRequest, timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> decisions_pb2.EvaluateResponse:
        if self._closed:
            raise StreamError(grpc.StatusCode.CANCELLED, "the client is closed")
        conn = self._open or self._start(metadata)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # No await between these two: the waiting order is the request order.
        conn.waiting.append(answer)
        conn.requests.put_nowait(request)
        if timeout is None:
            item = await answer
        else:
            try:
                item = await asyncio.wait_for(asyncio.shield(answer), timeout)
            except TimeoutError:
                answer.cancel()  # its answer, when it comes, is dropped
                raise _deadline_exceeded(timeout) from None
        return answer_of(item)

    def _start(self, metadata: Metadata | None) -> _AsyncOpen:
        conn = _AsyncOpen()
        conn.call = self._method(conn.feed(), metadata=metadata or self._metadata)
        conn.reader = asyncio.get_running_loop().create_task(self._read(conn))
        self._open = conn
        return conn

    async def _read(self, conn: _AsyncOpen) -> None:
        error: StreamError
        try:
            async for item in conn.call:
                answer = conn.waiting.popleft()
                if not answer.done():
                    answer.set_result(item)
        except grpc.RpcError as e:
            error = broken(e)
        except asyncio.CancelledError:
            error = StreamError(grpc.StatusCode.CANCELLED, "the client is closed")
        else:
            error = StreamError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
        if self._open is conn:
            self._open = None
        conn.requests.put_nowait(_END)
        while conn.waiting:
            answer = conn.waiting.popleft()
            if not answer.done():
                answer.set_exception(error)

    async def close(self) -> None:
        self._closed = True
        conn = self._open
        if conn is not None:
            conn.call.cancel()
            if conn.reader is not None:
                await asyncio.gather(conn.reader, return_exceptions=True)
