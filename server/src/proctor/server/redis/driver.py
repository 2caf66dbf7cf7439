"""The seam between the Redis layer and a Redis client (as envoyproxy/ratelimit's
redis/driver.go): what the script runner and the durability watch ask of a connection.

Two implementations sit beside it: `resp.RespClient`, the lean asyncio client of one
node (`redis://`, `unix://`), and `redispy.RedisPyDriver`, redis-py's asyncio client for
TLS (`rediss://`) and Redis Cluster. `connect.open_driver` picks one from the URL.

Replies are decoded as redis-py decodes them with `decode_responses=True`: str, int,
list, None. Errors are redis-py's exception classes whichever driver serves:
`ResponseError` (and its `NoScriptError`) for an error reply, `TimeoutError` when no
reply came by the deadline, `ConnectionError` when the connection failed. Deadlines
are event-loop times (`loop.time()`); no driver retries on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Packed:
    """Arguments that go with many calls unchanged (a store's per-plan arguments): their
    values, and the same as RESP bulk strings, encoded once (`resp.pack_args`)."""

    values: tuple[str, ...]
    wire: bytes

    def __len__(self) -> int:
        return len(self.values)


NO_ARGS = Packed((), b"")


class Driver(Protocol):
    """A connection to one Redis or a Redis Cluster."""

    name: str  # for logs: "resp", "redis-py", "redis-py-cluster"

    async def execute(self, args: tuple[Any, ...], deadline: float,
                      key: str | None = None) -> Any:
        """Send one command and return its reply. On a Cluster the command goes to the node
        of `key` (a command with no key: any node)."""
        ...

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Any],
                      tail: Packed, deadline: float) -> Any:
        """EVALSHA sha len(keys) *keys *args *tail.values, routed by keys[0]."""
        ...

    async def eval(self, text: str, keys: Sequence[str], args: Sequence[Any],
                   tail: Packed, deadline: float) -> Any:
        """EVAL of the script's text (the NOSCRIPT fallback), routed by keys[0]."""
        ...

    async def pipeline(self, commands: Sequence[tuple[Any, ...]], key: str | None,
                       deadline: float) -> list[Any]:
        """Send the commands together and return their replies in order; an error reply is
        its exception instance in its slot (not raised). On a Cluster every command goes
        to the node of `key` (they must share its slot). A transport failure raises."""
        ...

    async def each_node(self, args: tuple[Any, ...], deadline: float) -> dict[str, Any]:
        """Run a command on every node (every primary of a Cluster): {"host:port": reply};
        an error reply is its exception instance."""
        ...

    async def close(self) -> None:
        """Drop the connections; calls afterwards fail with ConnectionError."""
        ...
