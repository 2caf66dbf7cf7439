"""The serving policy and how it is replaced.

`PolicyHolder.current` is the compiled policy every request reads: one
attribute read, never mutated, swapped in one assignment. A reload (file
change, SIGHUP, Admin.ReloadPolicy) reads and compiles the file in a thread
off the event loop, then swaps. A file that fails to load leaves the old
policy serving; the error is logged, counted, audited and kept for GetPolicy
until a later reload succeeds.

Reloads are serialised. One runs at a time; every trigger that arrives
meanwhile joins the next one, so any number of triggers during a compile cost
exactly one more reload after it (which reads the file as it is by then). A
reload nobody needs any more is abandoned: when every Admin.ReloadPolicy
caller that asked for it has gone (deadline, cancel) and no signal or file
change asked for it, or when the server stops. Abandoning sets the compile's
cancel event; the engine stops at its next checkpoint and what it built is
freed. The compile runs in a daemon thread, so stopping never waits on it.

The file is read with `engine.read_text_file`: only a regular file, opened
non-blocking, at most `limits.max_bytes`. A FIFO, a device, an oversized or
non-UTF-8 file is a load error like any other, and the watch goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from proctor import engine

from . import auth, logs
from .audit.log import AuditLog
from .seams import ReloadMetrics

log = logging.getLogger("proctor.reload")

Subscriber = Callable[[Any], None]
T = TypeVar("T")

STOPPING = "the server is stopping"
ABANDONED = "the reload was abandoned: nobody waits for it any more"


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
    mode: int


def _file_state(path: str) -> _FileState | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return _FileState(st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _Loaded:
    digest: str
    policy: Any  # None when the text was the one last attempted and compiling was skipped


def _read_and_compile(
    path: str, limits: engine.Limits, cancel: threading.Event | None, skip_digest: str = ""
) -> _Loaded:
    """Runs in a worker thread: read the file, compile it; raises PolicyError or
    CompileCancelled. With skip_digest, text with that digest is not compiled again."""
    text = engine.read_text_file(path, max_bytes=limits.max_bytes)
    digest = _digest(text)
    if skip_digest and digest == skip_digest:
        return _Loaded(digest, None)
    return _Loaded(digest, engine.compile_policy(text, path, limits=limits, cancel=cancel))


def _in_daemon_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """fn(*args) in a new daemon thread; the future resolves on this loop.

    Not the loop's executor: asyncio.run() joins its threads at exit, so a compile
    there would hold up a stopping server.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def run() -> None:
        try:
            value, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: the server stopped
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=run, name="proctor-reload", daemon=True).start()
    return future


class _Round:
    """One reload: what asked for it, who waits for it, and its cancel switch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.triggers: dict[str, None] = {}  # an ordered set
        self.future: asyncio.Future[ReloadResult] = loop.create_future()
        self.cancel = threading.Event()
        self.waiters = 0  # Admin.ReloadPolicy callers waiting for the answer
        self.wanted = False  # asked for by a signal or the file watch: never abandoned

    @property
    def trigger(self) -> str:
        """The metric and log label: the first trigger, one named by an operator before 'file'."""
        named = [t for t in self.triggers if t != "file"]
        return named[0] if named else "file"

    @property
    def file_only(self) -> bool:
        """Only the file watch asked: unchanged text need not be compiled again."""
        return list(self.triggers) == ["file"]

    def settle(self, result: ReloadResult) -> None:
        if not self.future.done():
            self.future.set_result(result)


class PolicyHolder:
    """Holds the serving CompiledPolicy and replaces it on reload."""

    def __init__(
        self,
        path: str,
        policy: Any,
        text_digest: str,
        limits: engine.Limits = engine.DEFAULT_LIMITS,
    ) -> None:
        self.path = path
        self.limits = limits
        self.current = policy
        self.loaded_at = time.time()
        self.last_reload_at = self.loaded_at
        self.last_reload_error = ""
        self._digest = text_digest
        self._attempted_digest = text_digest
        self._subscribers: list[Subscriber] = []
        self._file_state = _file_state(path)
        self._running: _Round | None = None
        self._next: _Round | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        # Optional hooks, set by the wiring: the audit pipeline and the metrics.
        self.audit: AuditLog | None = None
        self.metrics: ReloadMetrics | None = None

    @classmethod
    def load(cls, path: str, limits: engine.Limits = engine.DEFAULT_LIMITS) -> PolicyHolder:
        """Compile the file at startup; PolicyError propagates to the caller."""
        loaded = _read_and_compile(path, limits, None)
        return cls(path, loaded.policy, loaded.digest, limits)

    def subscribe(self, callback: Subscriber) -> None:
        """Call callback(new_policy) after every successful swap."""
        self._subscribers.append(callback)

    # -- asking for a reload -------------------------------------------------------------------

    def request(self, trigger: str) -> None:
        """Ask for a reload and do not wait (SIGHUP, the file watch)."""
        if not self._closed:
            self._join(trigger).wanted = True

    async def reload(self, trigger: str) -> ReloadResult:
        """Reload (or join the reload that follows the running one) and wait; never raises
        but CancelledError. A caller that goes away may abandon a reload nobody else needs."""
        if self._closed:
            return ReloadResult(False, False, self.current.policy_version, STOPPING)
        round_ = self._join(trigger)
        round_.waiters += 1
        try:
            return await asyncio.shield(round_.future)
        except asyncio.CancelledError:
            round_.waiters -= 1
            if round_.waiters == 0 and not round_.wanted:
                self._abandon(round_)
            raise

    def close(self) -> None:
        """The server stops: abandon the running and the next reload, without waiting."""
        self._closed = True
        version = self.current.policy_version
        if self._running is not None:
            logs.event(log, logging.INFO, "policy reload abandoned", reason=STOPPING,
                       policy_version=version)
        for round_ in (self._running, self._next):
            if round_ is not None:
                round_.cancel.set()
                round_.settle(ReloadResult(False, False, version, STOPPING))
        self._next = None
        if self._runner is not None:
            self._runner.cancel()

    def _join(self, trigger: str) -> _Round:
        round_ = self._next
        if round_ is None:
            round_ = self._next = _Round(asyncio.get_running_loop())
        round_.triggers[trigger] = None
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return round_

    def _abandon(self, round_: _Round) -> None:
        round_.cancel.set()
        if round_ is self._next:
            self._next = None
        round_.settle(ReloadResult(False, False, self.current.policy_version, ABANDONED))

    async def _run(self) -> None:
        """Run the queued reloads one after another until none is left."""
        while self._next is not None and not self._closed:
            round_, self._next = self._next, None
            self._running = round_
            try:
                result = await self._attempt(round_)
            finally:
                self._running = None
            round_.settle(result)

    # -- one reload ----------------------------------------------------------------------------

    async def _attempt(self, round_: _Round) -> ReloadResult:
        self._file_state = _file_state(self.path)
        old = self.current
        trigger = round_.trigger
        skip = self._attempted_digest if round_.file_only else ""
        logs.event(log, logging.INFO, "policy reload started", trigger=trigger)
        try:
            loaded = await _in_daemon_thread(
                _read_and_compile, self.path, self.limits, round_.cancel, skip)
        except engine.CompileCancelled:
            logs.event(log, logging.INFO, "policy reload abandoned", trigger=trigger,
                       policy_version=old.policy_version)
            return ReloadResult(False, False, old.policy_version, ABANDONED)
        except engine.PolicyError as e:
            self._attempted_digest = ""  # unknown: the same text again is worth a try
            return await self._failed(trigger, old, e)
        except Exception as e:  # an engine bug must not stop later reloads
            log.exception("policy reload failed unexpectedly")
            self._attempted_digest = ""
            return await self._failed(trigger, old, e)
        self._attempted_digest = loaded.digest
        if loaded.policy is None:  # touched, not changed: nothing to do
            logs.event(log, logging.INFO, "policy reload skipped: the text is unchanged",
                       trigger=trigger, policy_version=old.policy_version)
            return ReloadResult(True, False, old.policy_version)
        if round_.cancel.is_set():  # abandoned after the compile finished
            logs.event(log, logging.INFO, "policy reload abandoned", trigger=trigger,
                       policy_version=old.policy_version)
            return ReloadResult(False, False, old.policy_version, ABANDONED)
        return await self._swap(trigger, old, loaded)

    async def _swap(self, trigger: str, old: Any, loaded: _Loaded) -> ReloadResult:
        policy = loaded.policy
        changed = loaded.digest != self._digest or policy.policy_version != old.policy_version
        self._digest = loaded.digest
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
        text = str(error) or type(error).__name__
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
                    # Admin.ReloadPolicy names its caller; a file change or SIGHUP, nobody
                    "caller": auth.audit_caller() if trigger == "rpc" else auth.SYSTEM_CALLER,
                },
            )
        except Exception:
            log.exception("could not audit the policy reload")

    # -- the file watch ------------------------------------------------------------------------

    async def watch(self, interval: float) -> None:
        """Poll the file's stat every `interval` seconds; ask for a reload when it changed.

        The reload reads the file (whatever it has become) and compiles it only when
        its text differs from the last attempt. Nothing a file can be stops the watch.
        """
        while not self._closed:
            await asyncio.sleep(interval)
            state = _file_state(self.path)
            if state is not None and state != self._file_state:
                self._file_state = state
                self.request("file")
