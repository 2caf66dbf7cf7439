"""Lua scripts as files, and the one runner that sends them.

A script lives in `lua/GROUP/NAME.lua` and opens with a header comment that names
its KEYS and ARGV and its one reply format. A group may have a `lib.lua` of shared
helpers, prepended to each of its scripts (the script Redis runs is lib + script, and
its SHA1 is computed here from that text).

`ScriptRunner` is the only code that sends scripts:

- loading: `load()` sends SCRIPT LOAD for every script registered with it (on every
  primary of a Cluster) and checks that Redis answers each script's own SHA1;
- calls: `run()` sends EVALSHA within the call bound; a NOSCRIPT answer (a restarted
  Redis, a node that never saw the script) is re-sent once as EVAL, which runs the
  script and caches it, within the same bound, and marks the scripts for re-loading
  at the next `ping()`;
- batches: `run_many()` sends several calls pipelined in one write and returns one
  reply or error per call, in order (what the audit's Redis sink needs); calls that
  met NOSCRIPT are re-sent, in their order, after the scripts are loaded again;
- errors: everything a driver raises becomes RedisUnavailable (or ScriptError for a
  script's own error reply) with a message that says what happened;
- health: `ping()` answers within the bound and re-loads the scripts when needed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import exceptions as rx

from .driver import NO_ARGS, Driver, Packed
from .errors import TRANSIENT_REPLIES, RedisUnavailable, ScriptError, VolatileRedis

LUA_DIR = Path(__file__).with_name("lua")


@dataclass(frozen=True, slots=True)
class Script:
    """One Lua script: its name ("budgets/reserve"), the text Redis runs, and its SHA1."""

    name: str
    text: str
    sha: str

    @classmethod
    def load(cls, group: str, name: str, lua_dir: Path = LUA_DIR) -> Script:
        """lua/GROUP/NAME.lua, with lua/GROUP/lib.lua before it when the group has one.
        ValueError when the script's header does not name its KEYS and ARGV."""
        body = (lua_dir / group / f"{name}.lua").read_text(encoding="utf-8")
        header = _header(body)
        if "KEYS" not in header or "ARGV" not in header:
            raise ValueError(f"lua/{group}/{name}.lua: the header comment must name KEYS and ARGV")
        lib = lua_dir / group / "lib.lua"
        text = (lib.read_text(encoding="utf-8") + "\n" + body) if lib.exists() else body
        return cls(f"{group}/{name}", text, hashlib.sha1(text.encode()).hexdigest())


def _header(text: str) -> str:
    """The comment lines a script opens with."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line)
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Call:
    """One script call of a batch (`ScriptRunner.run_many`)."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Any, ...] = ()


class ScriptRunner:
    """Sends scripts over one Driver, each call bounded by `timeout` seconds."""

    def __init__(self, driver: Driver, timeout: float = 1.0) -> None:
        self.driver = driver
        self.timeout = timeout
        self._scripts: dict[str, Script] = {}
        self._loaded = False
        # Set by the durability watch while the Redis is refused: every call answers it.
        self.refusal = ""

    def register(self, scripts: Iterable[Script]) -> None:
        """Scripts this runner loads (again) on `load()` and `ping()`."""
        for s in scripts:
            self._scripts[s.sha] = s
        self._loaded = False

    @property
    def scripts(self) -> tuple[Script, ...]:
        return tuple(self._scripts.values())

    def _deadline(self, timeout: float | None = None) -> float:
        return asyncio.get_running_loop().time() + (self.timeout if timeout is None else timeout)

    # -- calls ---------------------------------------------------------------------------

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any] = (),
                  tail: Packed = NO_ARGS) -> Any:
        """The script's reply; RedisUnavailable / ScriptError as the module docstring says.
        `tail`: further arguments, encoded once by the caller (driver.Packed)."""
        if self.refusal:
            raise VolatileRedis(self.refusal)
        # (call()'s body again, not a call of it: one coroutine less on the hot path)
        deadline = asyncio.get_running_loop().time() + self.timeout
        try:
            try:
                return await self.driver.evalsha(script.sha, keys, args, tail, deadline)
            except rx.NoScriptError:
                self._loaded = False
                return await self.driver.eval(script.text, keys, args, tail, deadline)
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error(script.name, e) from e

    async def call(self, script: Script, keys: Sequence[str], args: Sequence[Any] = (),
                   tail: Packed = NO_ARGS) -> Any:
        """`run` even while the Redis is refused (for the durability watch, which must go
        on looking at it)."""
        deadline = self._deadline()
        try:
            try:
                return await self.driver.evalsha(script.sha, keys, args, tail, deadline)
            except rx.NoScriptError:
                self._loaded = False
                return await self.driver.eval(script.text, keys, args, tail, deadline)
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error(script.name, e) from e

    async def run_many(self, calls: Sequence[Call], key: str | None = None
                       ) -> list[Any | RedisUnavailable]:
        """The calls pipelined (sent in one write; Redis runs them in order), and one result
        per call, in order: its reply, or its ScriptError / RedisUnavailable (not raised).
        On a Cluster every call must be in the slot of `key` (default: the first call's
        first key). A failure of the connection raises RedisUnavailable for the batch."""
        if not calls:
            return []
        if self.refusal:
            raise VolatileRedis(self.refusal)
        route = key if key is not None else (calls[0].keys[0] if calls[0].keys else None)
        deadline = self._deadline()
        commands = [("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in calls]
        try:
            replies = await self.driver.pipeline(commands, route, deadline)
            missing = [i for i, r in enumerate(replies) if isinstance(r, rx.NoScriptError)]
            if missing:  # load what is missing, then send those calls again, in order
                self._loaded = False
                await self._load(deadline)
                again = await self.driver.pipeline([commands[i] for i in missing], route,
                                                   deadline)
                for i, reply in zip(missing, again, strict=True):
                    replies[i] = reply
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error("batch", e) from e
        return [self.error(c.script.name, r) if isinstance(r, Exception) else r
                for c, r in zip(calls, replies, strict=True)]

    async def execute(self, *args: Any, key: str | None = None,
                      timeout: float | None = None) -> Any:
        """One plain command within the bound (errors as for scripts)."""
        try:
            return await self.driver.execute(args, self._deadline(timeout), key)
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error(str(args[0]), e) from e

    async def each_node(self, *args: Any, timeout: float | None = None) -> dict[str, Any]:
        """One command on every node (every primary of a Cluster): {node: reply}, an error
        reply as its exception; RedisUnavailable when a node does not answer."""
        try:
            return await self.driver.each_node(args, self._deadline(timeout))
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error(str(args[0]), e) from e

    # -- loading and health --------------------------------------------------------------

    async def load(self, timeout: float | None = None) -> None:
        """SCRIPT LOAD every registered script (on every node), checking each SHA1."""
        try:
            await self._load(self._deadline(timeout))
        except (rx.RedisError, OSError, TimeoutError) as e:
            raise self.error("SCRIPT LOAD", e) from e

    async def _load(self, deadline: float) -> None:
        for s in self._scripts.values():
            for node, sha in (await self.driver.each_node(("SCRIPT", "LOAD", s.text),
                                                          deadline)).items():
                if isinstance(sha, Exception):
                    raise sha
                if sha != s.sha:
                    raise ScriptError(f"SCRIPT LOAD of {s.name}.lua on {node} answered {sha}, "
                                      f"expected {s.sha}")
        self._loaded = True

    async def ping(self, timeout: float | None = None) -> None:
        """PING within the bound; load the scripts too when a failure or a NOSCRIPT since the
        last load may have lost them. RedisUnavailable when Redis does not answer."""
        deadline = self._deadline(timeout)
        try:
            await self.driver.execute(("PING",), deadline)
            if not self._loaded:
                await self._load(deadline)
        except (rx.RedisError, OSError, TimeoutError) as e:
            self._loaded = False
            raise self.error("PING", e) from e

    def error(self, what: str, e: BaseException) -> RedisUnavailable:
        """The layer's error for what a driver raised (or answered) during `what`."""
        if isinstance(e, RedisUnavailable):
            return e
        if isinstance(e, rx.ResponseError) and not isinstance(e, rx.NoScriptError):
            text = str(e)
            if text.startswith(TRANSIENT_REPLIES):
                return RedisUnavailable(f"redis: {text}")
            return ScriptError(f"redis {what}: {text}")
        self._loaded = False  # a restarted Redis has lost its scripts: load again on ping
        if isinstance(e, (TimeoutError, rx.TimeoutError)):
            return RedisUnavailable(f"redis did not answer within {self.timeout:g} s ({what})")
        return RedisUnavailable(f"redis unavailable: {type(e).__name__}: {e}")
