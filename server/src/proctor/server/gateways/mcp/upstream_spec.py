"""Where the upstream MCP server is (no MCP SDK needed to say so)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Where the upstream is: a command to launch over stdio, or a streamable-HTTP URL."""

    command: tuple[str, ...] = ()
    url: str = ""
    start_timeout: float = 30.0

    def describe(self) -> str:
        return self.url or " ".join(self.command)
