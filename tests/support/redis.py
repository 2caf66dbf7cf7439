"""Real redis-server processes for tests: one standalone server or a 3-master cluster.

Each is started on free loopback ports with its own working directory, never
touches the shared Redis on 6379, and is stopped by pid. They keep an append-only
file (`--appendonly yes`), as the Redis of budgets and approvals must (docs/redis.md:
`proctor serve` refuses a volatile one); `persistent=False` starts one without any
persistence, for the tests of that refusal and of a restart that loses data.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port, wait_port
from .wait import wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


@dataclass(slots=True)
class RedisProcess:
    port: int
    workdir: Path
    extra: tuple[str, ...] = ()
    persistent: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self._wait_ping()
        return self

    def _wait_ping(self, timeout: float = 10.0) -> None:
        def pong() -> bool:
            out = subprocess.run(
                [REDIS_CLI, "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            return out.stdout.strip() == "PONG"

        wait_until(pong, f"redis on {self.port} to answer PING", timeout)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> RedisProcess:
        """Start again on the same port (after stop or kill): with the data of its append-only
        file, or with nothing when not persistent."""
        self.stop()
        return self.start()


def start_redis(workdir: Path, *, persistent: bool = True) -> RedisProcess:
    return RedisProcess(port=free_port(), workdir=workdir, persistent=persistent).start()


@dataclass(slots=True)
class RedisCluster:
    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists: redis-server refuses
    cluster mode on a port above 55535."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


def _converged(cluster: RedisCluster) -> bool:
    """Every node reports cluster_state:ok with all 16384 slots covered."""
    for node in cluster.nodes:
        info = subprocess.run(
            [REDIS_CLI, "-p", str(node.port), "cluster", "info"], capture_output=True, text=True
        ).stdout
        if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
            return False
    return True


def start_cluster(workdir: Path, masters: int = 3) -> RedisCluster:
    """A real Redis Cluster of `masters` masters and no replicas, converged on every node."""
    cluster = RedisCluster()
    try:
        for i in range(masters):
            port = _cluster_port()
            node = RedisProcess(
                port=port,
                workdir=workdir / f"node{i}",
                extra=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "2000",
                ),
            )
            cluster.nodes.append(node.start())
        addrs = [f"127.0.0.1:{n.port}" for n in cluster.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )
        wait_until(lambda: _converged(cluster), "redis cluster to reach cluster_state:ok", 30,
                   interval=0.1)
        return cluster
    except BaseException:
        cluster.stop()
        raise
