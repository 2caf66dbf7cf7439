"""Running the inbox inside `proctor serve`: uvicorn on the process's own event loop.

The socket is bound here (SO_REUSEPORT with several workers, like the gRPC
port) and handed to uvicorn, whose own signal handling is switched off: the
process's SIGTERM drain stops the inbox with everything else. Open
server-sent event streams are ended first, so the drain does not wait on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from .context import Inbox

log = logging.getLogger("proctor.inbox")
STARTUP_SECONDS = 10.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers (the process has its own)."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class InboxServer:
    """The inbox's HTTP server; `start()` binds and serves, `stop()` ends it."""

    def __init__(self, app: Any, inbox: Inbox, host: str, port: int, *, reuse_port: bool = False,
                 tls_cert: str = "", tls_key: str = "") -> None:
        self.inbox = inbox
        self._sock = bind(host, port, reuse_port)
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", proxy_headers=False,
            server_header=False, timeout_graceful_shutdown=2,
            ssl_certfile=tls_cert or None, ssl_keyfile=tls_key or None,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._server.config.ssl_certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[self._sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the inbox stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                raise OSError("the inbox did not start in time")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.inbox.live.close()
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sock.close()
