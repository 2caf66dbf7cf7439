"""Helpers of the MCP gateway tests: the gateway as a real subprocess, real SDK clients on it.

`stdio_gateway(args)` launches `proctor mcp-gateway ARGS` the way an MCP client
does (the SDK's stdio_client) and yields an initialized ClientSession;
`http_gateway(args)` starts it with --http-listen and yields a session over
the SDK's streamable-HTTP client. `Upstream` is the test upstream's command
and the file it records its calls in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, proctor_command, run_proctor
from tests.support.wait import wait_until

HERE = Path(__file__).resolve().parent
UPSTREAM_SCRIPT = HERE / "upstream.py"


@dataclass
class Upstream:
    record: Path

    @property
    def command(self) -> list[str]:
        return [sys.executable, str(UPSTREAM_SCRIPT), str(self.record)]

    def calls(self, tool: str | None = None) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        rows = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [r for r in rows if tool is None or r["tool"] == tool]


def gateway_args(proctor: ProctorProcess | str, upstream: Upstream, agent: str,
                 *extra: str) -> list[str]:
    server = proctor if isinstance(proctor, str) else proctor.address
    return ["mcp-gateway", "--server", server, "--name", "up", "--agent", agent,
            "--log-level", "info", *extra, "--", *upstream.command]


@asynccontextmanager
async def stdio_gateway(args: list[str], errlog: Path) -> AsyncIterator[ClientSession]:
    cmd = proctor_command()
    params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], *args])
    with errlog.open("a") as err:
        async with stdio_client(params, errlog=err) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


@contextmanager
def http_gateway_process(args: list[str], workdir: Path) -> Iterator[str]:
    """The gateway serving streamable HTTP; yields its URL once it accepts connections."""
    port = free_port()
    cmd = [*proctor_command(), *args[:1], "--http-listen", f"127.0.0.1:{port}", *args[1:]]
    with _serving(cmd, port, workdir / "gateway-http.log"):
        yield f"http://127.0.0.1:{port}/mcp"


@contextmanager
def _serving(cmd: list[str], port: int, log_path: Path) -> Iterator[None]:
    """Run `cmd` until the block ends (SIGTERM by pid); wait until `port` answers HTTP."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        try:
            def answers() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: "
                                       f"{log_path.read_text()}")
                httpx2.get(f"http://127.0.0.1:{port}/", timeout=1)
                return True

            wait_until(answers, f"{cmd[:3]} to serve HTTP", 60, interval=0.1,
                       ignore=(httpx2.TransportError,))
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@contextmanager
def upstream_http_process(upstream: Upstream, workdir: Path) -> Iterator[str]:
    """The test upstream serving streamable HTTP; yields its URL."""
    port = free_port()
    with _serving([*upstream.command, "http", str(port)], port, workdir / "upstream.log"):
        yield f"http://127.0.0.1:{port}/mcp"


@asynccontextmanager
async def http_session(url: str, token: str = "") -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0)) as http, \
            streamable_http_client(url, http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def text_of(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def audit_events(proctor: ProctorProcess, **match: Any) -> list[dict[str, Any]]:
    """Decision events of the server's audit files whose fields equal `match`."""
    out = []
    for path in sorted((proctor.workdir / "audit").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("kind") == "decision" and all(event.get(k) == v
                                                       for k, v in match.items()):
                out.append(event)
    return out


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> Any:
    return wait_until(condition, what, timeout, interval=0.05)


def pending_approval(proctor: ProctorProcess, agent: str) -> str:
    """The id of the pending approval this agent's call created (via the real CLI)."""
    def find() -> str:
        out = run_proctor("approvals", "list", "--server", proctor.address, "--json",
                          cwd=proctor.workdir)
        for line in out.stdout.splitlines():
            a = json.loads(line)
            if a["delegation_path"][-1:] == [agent]:
                return str(a["approval_id"])
        return ""

    return str(wait_for(find, f"a pending approval of {agent}"))
