"""What the three framework examples share: a live `proctor serve` on the seed policy, the
reviewer (the real `proctor approvals` CLI) and the audit envelope (`proctor audit show`).

    python examples/langgraph_chain.py                 # starts its own server
    python examples/langgraph_chain.py --server 127.0.0.1:50051 --audit-dir ./proctor-audit

Not part of any package: the examples import it from their own folder.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SEED_POLICY = Path(__file__).with_name("safety.yaml")
RUN_ID = "42"  # the seed's topics are job.<run>.<verb>.<object>


def proctor() -> list[str]:
    exe = Path(sys.executable).with_name("proctor")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("proctor")
    return [found] if found else [sys.executable, "-m", "proctor.server"]


@dataclass
class Server:
    address: str
    audit_dir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_serving(address: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"proctor serve exited with {proc.returncode}")
        with contextlib.suppress(grpc.RpcError), grpc.insecure_channel(address) as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=1).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.1)
    raise SystemExit(f"proctor serve not serving after {timeout}s")


@contextlib.contextmanager
def server_from_args(description: str) -> Iterator[Server]:
    """--server/--audit-dir: use that server; none: start `proctor serve` on the seed policy
    on a free loopback port with a temporary audit directory, and stop it at the end."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--server", help="HOST:PORT of a running proctor serve")
    parser.add_argument("--audit-dir", type=Path, help="that server's --audit-dir")
    args = parser.parse_args()
    if args.server:
        yield Server(args.server, args.audit_dir or Path("proctor-audit"))
        return
    with tempfile.TemporaryDirectory(prefix="proctor-example-") as tmp:
        address = f"127.0.0.1:{_free_port()}"
        audit = Path(tmp) / "audit"
        proc = subprocess.Popen(
            [*proctor(), "serve", "--policy", str(SEED_POLICY), "--listen", address,
             "--audit-dir", str(audit)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_serving(address, proc)
            print(f"proctor serve {SEED_POLICY.name} on {address}")
            yield Server(address, audit)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def review(server: Server, verb: str, approval_id: str, reason: str,
           reviewer: str = "dana") -> None:
    """A reviewer approves or denies, with the real CLI."""
    cmd = [*proctor(), "approvals", verb, approval_id, "--server", server.address,
           "--reviewer", reviewer, "--reason", reason]
    print(f"  reviewer: proctor approvals {verb} {approval_id} --reason {reason!r}")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def show_envelope(server: Server, decision_id: str, until: str = "denied") -> None:
    """Print `proctor audit show DECISION_ID` once it shows `until` (the audit is written
    asynchronously, so the last step may land a moment after the answer)."""
    cmd = [*proctor(), "audit", "show", decision_id, "--audit-dir", str(server.audit_dir)]
    print(f"\n$ proctor audit show {decision_id}")
    end = time.monotonic() + 10
    while True:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if (done.returncode == 0 and until in done.stdout) or time.monotonic() > end:
            print(done.stdout or done.stderr)
            return
        time.sleep(0.2)
