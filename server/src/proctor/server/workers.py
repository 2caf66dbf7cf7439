"""One process or several on one port.

`run(settings)` runs the server in this process when --workers is 1. With
--workers N it becomes a supervisor: it starts N worker processes (`python -m
server.workers`, settings passed as JSON in the environment), each binding the
same port with SO_REUSEPORT so the kernel spreads connections across them.

The supervisor forwards SIGHUP, SIGTERM and SIGINT to every worker. A reload
reaches every worker three ways: each worker polls the policy file; SIGHUP to
the supervisor is fanned out; and a worker that served Admin.ReloadPolicy
sends SIGHUP to the supervisor, which fans it out to the rest. A worker that
dies unexpectedly is restarted (with a pause); one that keeps dying at startup
stops the whole group.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

from . import logs
from .settings import Settings

log = logging.getLogger("proctor.workers")

_ENV_SETTINGS = "PROCTOR_WORKER_SETTINGS"
_ENV_INDEX = "PROCTOR_WORKER_INDEX"
_ENV_SUPERVISOR = "PROCTOR_SUPERVISOR_PID"
_RESTART_PAUSE = 1.0
_FAST_CRASH_SECONDS = 5.0
_MAX_FAST_CRASHES = 3


def run(settings: Settings) -> int:
    """Serve with settings.workers processes; return the exit code."""
    if settings.workers == 1:
        return run_worker(settings, worker=None, supervisor_pid=None)
    return Supervisor(settings).run()


def run_worker(settings: Settings, worker: int | None, supervisor_pid: int | None) -> int:
    from .main import StartupError, serve

    logs.configure(settings.log_level, worker)
    try:
        return asyncio.run(serve(settings, worker=worker, supervisor_pid=supervisor_pid))
    except StartupError as e:
        logs.event(log, logging.ERROR, str(e))
        print(f"proctor serve: {e}", file=sys.stderr)
        return 1


class Supervisor:
    """Starts, watches and signals the worker processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.fast_crashes = 0
        self.stopping = False
        self.failed = False

    def _spawn(self, index: int) -> None:
        env = dict(os.environ)
        env[_ENV_SETTINGS] = json.dumps(dataclasses.asdict(self.settings))
        env[_ENV_INDEX] = str(index)
        env[_ENV_SUPERVISOR] = str(os.getpid())
        proc = subprocess.Popen([sys.executable, "-m", "proctor.server.workers"], env=env)
        self.procs[index] = proc
        self.started_at[index] = time.monotonic()
        logs.event(log, logging.INFO, "worker started", index=index, worker_pid=proc.pid)

    def _forward(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
            self._forward(signal.SIGTERM)
        elif signum == signal.SIGHUP:
            self._forward(signal.SIGHUP)

    def run(self) -> int:
        logs.configure(self.settings.log_level)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for index in range(self.settings.workers):
            self._spawn(index)
        logs.event(
            log, logging.INFO, "supervisor running",
            workers=self.settings.workers, listen=self.settings.listen,
        )
        codes: dict[int, int] = {}
        while self.procs:
            time.sleep(0.1)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del self.procs[index]
                if self.stopping or self.failed:
                    codes[index] = code
                    continue
                self._restart_or_fail(index, code)
        logs.event(log, logging.INFO, "supervisor stopped", exit_codes=codes)
        return 1 if self.failed or any(c != 0 for c in codes.values()) else 0

    def _restart_or_fail(self, index: int, code: int) -> None:
        lived = time.monotonic() - self.started_at[index]
        logs.event(
            log, logging.ERROR, "worker exited unexpectedly",
            index=index, exit_code=code, lived_seconds=round(lived, 3),
        )
        if lived < _FAST_CRASH_SECONDS:
            self.fast_crashes += 1
        if self.fast_crashes >= _MAX_FAST_CRASHES or (code == 1 and lived < _FAST_CRASH_SECONDS):
            # It cannot start (bad policy, port taken): stop the group instead of looping.
            self.failed = True
            self._forward(signal.SIGTERM)
            return
        time.sleep(_RESTART_PAUSE)
        if not self.stopping:
            self._spawn(index)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _worker_main() -> int:
    # A reload fanned out while this worker still starts must not kill it (SIGHUP's default
    # action): it loads the file as it starts, and the file poll catches a later change.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = Settings(**json.loads(os.environ[_ENV_SETTINGS]))
    index = int(os.environ[_ENV_INDEX])
    supervisor = int(os.environ[_ENV_SUPERVISOR])
    _die_with_parent()
    if os.getppid() != supervisor:
        return 1
    return run_worker(settings, worker=index, supervisor_pid=supervisor)


if __name__ == "__main__":
    sys.exit(_worker_main())
