"""The upstream MCP server: one connection, opened on first need and again after it dies.

The gateway speaks to its upstream with the SDK's own client (`ClientSession`
over `stdio_client` or `streamable_http_client`), forwarding requests as they
came (`request(method, params)`: raw params in, the raw result out), so what
the gateway does not look at passes through unchanged.

Crashes, as a platform engineer would want them:

- A request in flight when the upstream dies (the process exits, the HTTP
  server goes away) fails with `UpstreamGone`, naming what happened. The
  gateway never sends it again: the tool may have run.
- The next request starts the upstream again (a new process, a new HTTP
  session). A start that fails is `UpstreamGone` for that request, and the
  one after tries again: the gateway itself keeps serving.

The connection lives in a task of its own (`_hold`), because the SDK's
transports are context managers bound to the task that entered them. A relay
between the transport and the session sees the transport's end of stream,
so a dead upstream is noticed at once, not by the next request's failure.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from pydantic import BaseModel, ConfigDict

from .upstream_spec import UpstreamSpec

log = logging.getLogger("proctor.mcp_gateway")

# The gateway's own credentials never reach the upstream's environment.
PRIVATE_ENV = ("PROCTOR_TOKEN", "PROCTOR_TOKEN_FILE")
# Reserved `_meta` keys of the downstream connection (2026-07-28 envelope, progress tokens):
# they describe that connection, not the upstream's.
_RESERVED_META_PREFIX = "io.modelcontextprotocol/"


class UpstreamGone(Exception):
    """The upstream could not be started or reached, or it stopped during a request."""


class _RawResult(BaseModel):
    """Any result, every field kept as the upstream sent it (the SDK checks a spec method's
    result against the negotiated revision first)."""

    model_config = ConfigDict(extra="allow")


class _RawRequest(types.Request[dict[str, Any] | None, str]):
    """Any request, params as received: what the gateway forwards."""


class _RawNotification(types.Notification[dict[str, Any] | None, str]):
    """Any notification, params as received."""


def upstream_params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The params to forward: as received, less `_meta` keys that belong to the downstream
    connection (its progress token, its protocol envelope)."""
    if params is None:
        return None
    out = dict(params)
    meta = out.get("_meta")
    if isinstance(meta, Mapping):
        kept = {k: v for k, v in meta.items()
                if k != "progressToken" and not str(k).startswith(_RESERVED_META_PREFIX)}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out


def upstream_environment() -> dict[str, str]:
    """The gateway's environment, less its own Proctor credentials: what a stdio upstream
    gets (an MCP client's configuration sets the gateway's environment for both)."""
    return {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}


class Upstream:
    """One upstream connection, shared by every downstream session of the gateway."""

    def __init__(self, spec: UpstreamSpec, tasks: anyio.abc.TaskGroup) -> None:
        self.spec = spec
        self._tasks = tasks
        self._lock = anyio.Lock()
        self._session: ClientSession | None = None
        self._stop: anyio.Event | None = None
        self.initialized: types.InitializeResult | None = None
        self.starts = 0

    async def request(self, method: str, params: Mapping[str, Any] | None,
                      timeout: float | None = None) -> dict[str, Any]:
        """Forward one request; its raw result. MCPError: the upstream's own error answer.
        UpstreamGone: no upstream, or it stopped before answering."""
        session = await self._current()
        try:
            result = await session.send_request(
                _RawRequest(method=method, params=upstream_params(params)), _RawResult,
                request_read_timeout_seconds=timeout)
        except MCPError as e:
            if e.code == types.CONNECTION_CLOSED:
                self._drop(session)
                raise UpstreamGone(
                    f"the upstream MCP server ({self.spec.describe()}) stopped before answering "
                    f"{method}; it is started again on the next request") from None
            raise
        return dict(result.model_extra or {})

    async def notify(self, method: str, params: Mapping[str, Any] | None) -> None:
        """Forward one notification (dropped, with a log line, when there is no upstream)."""
        try:
            session = await self._current()
            await session.send_notification(
                _RawNotification(method=method, params=upstream_params(params)))  # type: ignore[arg-type]
        except UpstreamGone as e:
            log.warning("notification %s not forwarded: %s", method, e)

    async def start(self) -> types.InitializeResult:
        """Connect now (at start-up); the upstream's initialize result."""
        await self._current()
        assert self.initialized is not None
        return self.initialized

    async def close(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def _current(self) -> ClientSession:
        async with self._lock:
            if self._session is None:
                await self._connect()
            assert self._session is not None
            return self._session

    async def _connect(self) -> None:
        ready = anyio.Event()
        failure: list[BaseException] = []
        self.starts += 1
        self._tasks.start_soon(self._hold, ready, failure)
        await ready.wait()
        if failure:
            why = failure[0]
            raise UpstreamGone(f"cannot start the upstream MCP server ({self.spec.describe()}): "
                               f"{type(why).__name__}: {why}")

    async def _hold(self, ready: anyio.Event, failure: list[BaseException]) -> None:
        """Own the connection: open it, hand the session out, close it when told or dead."""
        stop = anyio.Event()
        session: ClientSession | None = None
        try:
            async with AsyncExitStack() as stack:
                if self.spec.url:
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url))
                else:
                    params = StdioServerParameters(
                        command=self.spec.command[0], args=list(self.spec.command[1:]),
                        env=upstream_environment())
                    read, write = await stack.enter_async_context(
                        stdio_client(params, errlog=sys.stderr))
                relayed = self._relay(read, stop, stack)
                session = await stack.enter_async_context(ClientSession(
                    relayed, write, client_info=types.Implementation(
                        name="proctor-mcp-gateway", version=_version())))
                with anyio.fail_after(self.spec.start_timeout):
                    self.initialized = await session.initialize()
                self._session, self._stop = session, stop
                ready.set()
                await stop.wait()
        except Exception as e:  # what the transports raise is theirs to choose
            if not ready.is_set():
                failure.append(e)
            else:
                log.warning("upstream connection ended: %s: %s", type(e).__name__, e)
        finally:
            if self._session is session:
                self._session = None
            ready.set()

    def _relay(self, read: Any, stop: anyio.Event,
               stack: AsyncExitStack) -> MemoryObjectReceiveStream[SessionMessage | Exception]:
        """A stream that relays `read` to the session and, at its end (the upstream is gone),
        retires this connection, so the next request starts a new one."""
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def relay() -> None:
            async with send:
                try:
                    async for item in read:
                        await send.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass
            if not stop.is_set():
                log.warning("the upstream MCP server (%s) closed the connection",
                            self.spec.describe())
                self._retire(stop)

        group = self._tasks
        group.start_soon(relay)
        stack.callback(receive.close)
        return receive

    def _retire(self, stop: anyio.Event) -> None:
        if self._stop is stop:
            self._session = None
        stop.set()

    def _drop(self, session: ClientSession) -> None:
        if self._session is session and self._stop is not None:
            self._retire(self._stop)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("proctor")
    except PackageNotFoundError:
        return "unknown"
