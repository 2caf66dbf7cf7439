"""A real `proctor serve` subprocess for tests.

`start_proctor(policy, workdir, *extra_args)` runs the installed console script
(or `python -m server` when it is missing) on a free loopback port with a
private audit directory, waits until health says SERVING, and returns a
`ProctorProcess` exposing the address, pid and stderr log. `stop()` sends
SIGTERM and waits for the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .ports import free_port
from .wait import wait_until

_BIN = Path(sys.executable).parent / "proctor"


def proctor_command() -> list[str]:
    if _BIN.exists():
        return [str(_BIN)]
    return [sys.executable, "-m", "proctor.server"]


@dataclass
class ProctorProcess:
    policy: Path
    workdir: Path
    port: int
    args: tuple[str, ...]
    metrics_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr_path = self.workdir / "proctor.stderr"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self, wait: bool = True, timeout: float = 30.0) -> ProctorProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *proctor_command(), "serve",
            "--policy", str(self.policy),
            "--listen", self.address,
            "--audit-dir", str(self.workdir / "audit"),
            *self.args,
        ]
        if self.metrics_port is not None:
            cmd += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=self.workdir,
                start_new_session=True,
            )
        if wait:
            self.wait_serving(timeout)
        return self

    def health(self, service: str = "", timeout: float = 1.0) -> int:
        """The health status of one service (health_pb2.HealthCheckResponse.ServingStatus)."""
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            req = health_pb2.HealthCheckRequest(service=service)
            return stub.Check(req, timeout=timeout).status

    def wait_serving(self, timeout: float = 30.0) -> None:
        def serving() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"proctor exited with {self.proc.returncode} before serving:\n{self.log()}"
                )
            return self.health() == health_pb2.HealthCheckResponse.SERVING

        try:
            wait_until(serving, "SERVING", timeout, ignore=(grpc.RpcError,))
        except AssertionError as e:
            raise TimeoutError(f"proctor not SERVING after {timeout}s:\n{self.log()}") from e

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """SIGTERM (by pid) and wait; SIGKILL the group if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode


def start_proctor(
    policy: str | os.PathLike[str],
    workdir: Path,
    *args: str,
    metrics: bool = False,
    wait: bool = True,
    port: int | None = None,
) -> ProctorProcess:
    """Start `proctor serve` on a free port; wait for health SERVING unless wait=False."""
    p = ProctorProcess(
        policy=Path(policy),
        workdir=workdir,
        port=port or free_port(),
        args=tuple(args),
        metrics_port=free_port() if metrics else None,
    )
    return p.start(wait=wait)


def run_proctor(*args: str, cwd: Path, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `proctor ARGS...` to completion (for commands expected to exit at once)."""
    return subprocess.run(
        [*proctor_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
