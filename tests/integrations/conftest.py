"""Fixtures of the integration tests: one real `proctor serve` on tests/integrations/policy.yaml
for the package, reviewers through the real CLI, and a scripted-tool ledger."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proctor.client import ApprovalState, ProctorClient
from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor
from tests.support.wait import wait_until

POLICY = Path(__file__).with_name("policy.yaml")


def crewai_available() -> bool:
    """CrewAI is installed in a venv of its own (.venv-crewai, made by scripts/test): it
    needs mcp<2, which the MCP gateway cannot use. Elsewhere its tests skip, unless
    PROCTOR_REQUIRE_CREWAI=1 says this run is the one that must have it."""
    import importlib.util

    if importlib.util.find_spec("crewai") is not None:
        return True
    if os.environ.get("PROCTOR_REQUIRE_CREWAI") == "1":
        raise RuntimeError("PROCTOR_REQUIRE_CREWAI=1 but crewai is not installed")
    return False


CREWAI_SKIP_REASON = "crewai runs in .venv-crewai (requirements-crewai.lock, scripts/test)"

# CrewAI and the Agents SDK would phone home for telemetry and tracing; the machine has no
# network but package registries, and a test must not wait on one.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    s = start_proctor(POLICY, tmp_path_factory.mktemp("proctor"))
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


@pytest.fixture
def client(server: ProctorProcess) -> Iterator[ProctorClient]:
    with ProctorClient(server.address, timeout=10) as c:
        yield c


@pytest.fixture
def dead_client() -> Iterator[ProctorClient]:
    """A client of a port nothing listens on, with no retries: Proctor is down."""
    from proctor.client import NO_RETRY

    with ProctorClient(f"127.0.0.1:{free_port()}", timeout=2, retry=NO_RETRY) as c:
        yield c


@pytest.fixture
def run_id() -> str:
    """A run of its own: run-scoped budgets and approvals never meet another test's."""
    return f"run-{uuid.uuid4().hex[:12]}"


class Ledger:
    """What the tools really did: every run of every tool, in order, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs: list[tuple[str, dict[str, object]]] = []

    def record(self, name: str, **args: object) -> None:
        with self._lock:
            self.runs.append((name, args))

    def count(self, name: str) -> int:
        with self._lock:
            return sum(1 for n, _ in self.runs if n == name)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


def reviewer(server: ProctorProcess, verb: str, approval_id: str, reason: str = "") -> None:
    """Approve or deny through the real CLI, as reviewer dana."""
    args = ["approvals", verb, approval_id, "--server", server.address, "--reviewer", "dana"]
    if reason:
        args += ["--reason", reason]
    done = run_proctor(*args, cwd=server.workdir)
    assert done.returncode == 0, done.stderr


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    """Poll `check` until it returns something truthy (a deadline, not a fixed sleep)."""
    return wait_until(check, what, timeout)


def approvals_of(client: ProctorClient, run_id: str) -> list[ApprovalState]:
    """Every approval of a run (ListApprovals, all statuses)."""
    from proctor.v1 import approvals_pb2, approvals_pb2_grpc

    stub = approvals_pb2_grpc.ApprovalsStub(client.channel)
    resp = stub.ListApprovals(approvals_pb2.ListApprovalsRequest(limit=1000), timeout=10)
    return [ApprovalState.from_proto(a) for a in resp.approvals if a.run_id == run_id]
