"""One open bidirectional stream used like a unary method: `await stream(payload)`.

The load loop's workers share the stream of their channel: each call queues its
message and waits for the answer at its place in a FIFO (the server answers in
request order), as the SDKs' `stream=True` does. A stream that breaks fails
every waiting call with its status and is opened again by the next call.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc

_END: Any = object()
# EvaluateBatchItem: field 2 (an error status in the item's slot), length-delimited.
ITEM_ERROR_TAG = b"\x12"


class StreamFailure(Exception):
    """The stream ended or broke; `code` names the status."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class RawStream:
    """A stream_stream method on raw bytes, multiplexed over one open call."""

    def __init__(self, method: Any, timeout: float | None = None) -> None:
        self._method = method
        self._timeout = timeout  # the whole stream's deadline
        self._call: Any = None
        self._queue: asyncio.Queue[Any] | None = None
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()

    async def __call__(self, payload: bytes, timeout: float | None = None) -> bytes:
        if self._call is None:
            self._open()
        assert self._queue is not None
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        # No await between these two: the waiting order is the sending order.
        self._waiting.append(answer)
        self._queue.put_nowait(payload)
        return await answer

    def _open(self) -> None:
        queue: asyncio.Queue[Any] = asyncio.Queue()
        waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()

        async def feed() -> AsyncIterator[bytes]:
            while (item := await queue.get()) is not _END:
                yield item

        call = self._method(feed(), timeout=self._timeout)
        self._call, self._queue, self._waiting = call, queue, waiting
        asyncio.get_running_loop().create_task(self._read(call, queue, waiting))

    async def _read(self, call: Any, queue: asyncio.Queue[Any],
                    waiting: collections.deque[asyncio.Future[bytes]]) -> None:
        failure = StreamFailure("STREAM_ENDED")
        try:
            async for item in call:
                answer = waiting.popleft()
                if not answer.done():
                    answer.set_result(item)
        except grpc.aio.AioRpcError as e:
            failure = StreamFailure(e.code().name)
        except asyncio.CancelledError:
            failure = StreamFailure("CANCELLED")
        if self._call is call:
            self._call = None
        queue.put_nowait(_END)
        while waiting:
            answer = waiting.popleft()
            if not answer.done():
                answer.set_exception(failure)
