"""The serving policy and how it is replaced.

`PolicyHolder.current` is the compiled policy every request reads: one
attribute read, never mutated, swapped in one assignment. A reload (file
change, SIGHUP, Admin.ReloadPolicy) reads and compiles the file in a thread
off the event loop, then swaps. A file that fails to compile leaves the old
policy serving; the error is logged, counted, audited and kept for GetPolicy
until a later reload succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proctor import engine

from . import logs
from .seams import ReloadMetrics

log = logging.getLogger("proctor.reload")

Subscriber = Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    changed: bool
    policy_version: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class _FileState:
    mtime_ns: int
    size: int
    inode: int


def _file_state(path: str) -> _FileState | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _FileState(st.st_mtime_ns, st.st_size, st.st_ino)


def _read_and_compile(path: str) -> tuple[str, Any]:
    """Runs in a worker thread: read the file, compile it; raises PolicyError or OSError."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return _digest(text), engine.compile_policy(text, source=path)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PolicyHolder:
    """Holds the serving CompiledPolicy and replaces it on reload."""

    def __init__(self, path: str, policy: Any, text_digest: str) -> None:
        self.path = path
        self.current = policy
        self.loaded_at = time.time()
        self.last_reload_at = self.loaded_at
        self.last_reload_error = ""
        self._digest = text_digest
        self._attempted_digest = text_digest
        self._subscribers: list[Subscriber] = []
        self._lock = asyncio.Lock()
        self._file_state = _file_state(path)
        # Optional hooks, set by the wiring: the audit pipeline and the metrics.
        self.audit: Any = None
        self.metrics: ReloadMetrics | None = None

    @classmethod
    def load(cls, path: str) -> PolicyHolder:
        """Compile the file at startup; PolicyError and OSError propagate to the caller."""
        digest, policy = _read_and_compile(path)
        return cls(path, policy, digest)

    def subscribe(self, callback: Subscriber) -> None:
        """Call callback(new_policy) after every successful swap."""
        self._subscribers.append(callback)

    async def reload(self, trigger: str) -> ReloadResult:
        """Compile the file again off the event loop and swap it in; never raises."""
        async with self._lock:
            self._file_state = _file_state(self.path)
            loop = asyncio.get_running_loop()
            old = self.current
            try:
                digest, policy = await loop.run_in_executor(None, _read_and_compile, self.path)
            except (engine.PolicyError, OSError, UnicodeDecodeError) as e:
                return await self._failed(trigger, old, e)
            self._attempted_digest = digest
            changed = digest != self._digest or policy.policy_version != old.policy_version
            self._digest = digest
            self.current = policy
            now = time.time()
            self.last_reload_at = now
            self.last_reload_error = ""
            if changed:
                self.loaded_at = now
            for callback in self._subscribers:
                try:
                    callback(policy)
                except Exception:
                    log.exception("reload subscriber failed")
            if self.metrics is not None:
                self.metrics.reloaded(True, trigger)
                self.metrics.policy_loaded(policy.policy_version, policy.rule_count)
            logs.event(
                log, logging.INFO, "policy reloaded",
                trigger=trigger, changed=changed, policy_version=policy.policy_version,
                previous_version=old.policy_version, rules=policy.rule_count,
            )
            await self._audit(trigger, "ok", policy.policy_version, old.policy_version, "")
            return ReloadResult(True, changed, policy.policy_version)

    async def _failed(self, trigger: str, old: Any, error: BaseException) -> ReloadResult:
        text = str(error)
        if isinstance(error, OSError):
            text = f"{self.path}: {error.strerror or error}"
        self.last_reload_at = time.time()
        self.last_reload_error = text
        if self.metrics is not None:
            self.metrics.reloaded(False, trigger)
        logs.event(
            log, logging.ERROR, "policy reload failed; the previous policy keeps serving",
            trigger=trigger, error=text, policy_version=old.policy_version,
        )
        await self._audit(trigger, "failed", old.policy_version, old.policy_version, text)
        return ReloadResult(False, False, old.policy_version, text)

    async def _audit(
        self, trigger: str, outcome: str, version: str, previous: str, err: str
    ) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(
                "policy_reload",
                {
                    "outcome": outcome,
                    "policy_version": version,
                    "previous_policy_version": previous,
                    "trigger": trigger,
                    "source": self.path,
                    "reason": err,
                },
            )
        except Exception:
            log.exception("could not audit the policy reload")

    async def _changed_on_disk(self) -> bool:
        """The file looks different (stat) and its content differs from the last attempt."""
        state = _file_state(self.path)
        if state is None or state == self._file_state:
            return False
        self._file_state = state
        loop = asyncio.get_running_loop()
        try:
            digest = await loop.run_in_executor(None, _hash_file, self.path)
        except OSError:
            return False
        if digest == self._attempted_digest:
            return False
        self._attempted_digest = digest
        return True

    async def watch(self, interval: float) -> None:
        """Poll the file every `interval` seconds and reload when its content changed."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._changed_on_disk():
                    await self.reload("file")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("policy file watch failed")


def _hash_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return _digest(f.read())
