"""Policy reload on file change, SIGHUP and Admin.ReloadPolicy, while clients keep calling."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proctor.client import ProctorClient
from proctor.v1 import admin_pb2, admin_pb2_grpc
from tests.support.proctor import ProctorProcess, start_proctor

from .conftest import SEED_POLICY

BROKEN = "version: v1\nrules:\n  - id: oops\n    match: {topics: ['job.*']}\n    decision: maybe\n"


def versioned(version: str) -> str:
    return f'policy_version: "{version}"\n' + SEED_POLICY.read_text()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def get_policy(address: str) -> admin_pb2.GetPolicyResponse:
    with grpc.insecure_channel(address) as ch:
        return admin_pb2_grpc.AdminStub(ch).GetPolicy(admin_pb2.GetPolicyRequest(), timeout=5)


def reload_policy(address: str) -> admin_pb2.ReloadPolicyResponse:
    with grpc.insecure_channel(address) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        return stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), timeout=10)


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Callers:
    """N threads, each with its own client, calling Evaluate as fast as they can."""

    def __init__(self, address: str, n: int = 8) -> None:
        self.address = address
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.calls = 0
        self.versions: list[str] = []  # in arrival order, de-duplicated runs
        # Per caller: the versions it saw, de-duplicated runs. Each caller's calls are
        # sequential, so once it sees a new version it must never see an older one.
        self.per_caller: list[list[str]] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        seen: list[str] = []
        with self._lock:
            self.per_caller.append(seen)
        with ProctorClient(self.address, timeout=5.0) as c:
            while not self.stop.is_set():
                try:
                    d = c.evaluate(
                        "job.1.send.email", delegation_path=["a"], risk_tags=["external"]
                    )
                except Exception as e:  # every failure is a test failure
                    with self._lock:
                        self.failures.append(repr(e))
                    continue
                with self._lock:
                    self.calls += 1
                    if not self.versions or self.versions[-1] != d.policy_version:
                        self.versions.append(d.policy_version)
                    if not seen or seen[-1] != d.policy_version:
                        seen.append(d.policy_version)

    def latest(self) -> str:
        with self._lock:
            return self.versions[-1] if self.versions else ""

    def __enter__(self) -> Callers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    """A server whose policy file is polled every 0.2 s."""
    work = tmp_path_factory.mktemp("reload")
    policy = work / "policy.yaml"
    policy.write_text(versioned("v1"))
    server = start_proctor(policy, work, "--reload-poll-seconds", "0.2", metrics=True)
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()


def test_file_change_reloads_under_load_with_no_failed_call(watched: ProctorProcess) -> None:
    with Callers(watched.address) as callers:
        wait_for(lambda: callers.latest() == "v1", what="first answers")
        write_atomically(watched.policy, versioned("v2"))
        wait_for(lambda: callers.latest() == "v2", what="v2 to serve")

        # A broken file: the old policy keeps serving, GetPolicy shows why.
        watched.policy.write_text(BROKEN)
        wait_for(lambda: get_policy(watched.address).last_reload_error != "", what="the error")
        calls_before = callers.calls
        time.sleep(0.5)
        assert callers.calls > calls_before
        assert callers.latest() == "v2"

        # Fixed again: the error clears and the new version serves.
        write_atomically(watched.policy, versioned("v3"))
        wait_for(lambda: callers.latest() == "v3", what="v3 to serve")
    assert callers.failures == []
    assert set(callers.versions) == {"v1", "v2", "v3"}
    for seen in callers.per_caller:
        assert seen == sorted(seen) and len(seen) == len(set(seen)), callers.per_caller
    assert callers.calls > 100
    p = get_policy(watched.address)
    assert (p.policy_version, p.last_reload_error) == ("v3", "")
    log = watched.log()
    assert '"msg":"policy reload failed; the previous policy keeps serving"' in log
    with urllib.request.urlopen(watched.metrics_url, timeout=5) as r:
        metrics = r.read().decode()
    assert 'proctor_policy_reloads_total{result="failed",trigger="file"} 1.0' in metrics
    assert 'proctor_policy_reloads_total{result="ok",trigger="file"} 2.0' in metrics
    assert 'proctor_policy_info{policy_version="v3"} 1.0' in metrics


def test_broken_file_keeps_the_old_policy_and_is_shown(watched: ProctorProcess) -> None:
    before = get_policy(watched.address)
    watched.policy.write_text(BROKEN)
    with pytest.raises(grpc.RpcError) as e:
        reload_policy(watched.address)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "oops" in (e.value.details() or "")
    after = get_policy(watched.address)
    assert after.policy_version == before.policy_version
    assert "oops" in after.last_reload_error
    assert str(watched.policy) in after.last_reload_error
    with ProctorClient(watched.address) as c:
        d = c.evaluate("job.1.delegate.internal", delegation_path=["a"])
    assert (d.decision, d.policy_version) == ("allow", before.policy_version)

    write_atomically(watched.policy, versioned("v4"))
    r = reload_policy(watched.address)
    # The file watch (0.2 s) may have swapped v4 in first: then this reload changes nothing.
    assert r.policy_version == "v4"
    assert get_policy(watched.address).last_reload_error == ""
    # Reloading the same file again changes nothing.
    assert reload_policy(watched.address).changed is False


def test_sighup_reloads(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned("h1"))
    # The file is polled once an hour here: only SIGHUP can make this reload.
    server = start_proctor(policy, tmp_path, "--reload-poll-seconds", "3600")
    try:
        write_atomically(policy, versioned("h2"))
        time.sleep(0.3)
        assert get_policy(server.address).policy_version == "h1"
        server.send_signal(signal.SIGHUP)
        wait_for(lambda: get_policy(server.address).policy_version == "h2", what="h2")
        assert '"trigger":"sighup"' in server.log()
    finally:
        assert server.stop() == 0, server.log()
