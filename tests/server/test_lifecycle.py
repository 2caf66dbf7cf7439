"""Startup refusals, health transitions, SIGTERM drain and several workers on one port."""

from __future__ import annotations

import signal
import socket
import statistics
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proctor.client import EvaluationRequest, ProctorClient, ProctorError
from proctor.v1 import admin_pb2, admin_pb2_grpc, decisions_pb2, decisions_pb2_grpc
from tests.support.ports import free_port
from tests.support.proctor import run_proctor, start_proctor
from tests.support.redis import RedisProcess

from .conftest import SEED_POLICY
from .test_reload import versioned, wait_for, write_atomically

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# -- refusals at startup ---------------------------------------------------------------


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    r = run_proctor("serve", "--policy", str(SEED_POLICY), "--workers", "2", cwd=tmp_path)
    assert r.returncode == 2
    assert "--workers 2 needs --redis-url" in r.stderr
    assert "split" in r.stderr


def test_bad_policy_is_refused_at_startup(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: v1\nrules:\n  - id: x\n    match: {topics: ['a']}\n    decision: nope\n"
    )
    r = run_proctor("serve", "--policy", str(bad), "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert r.returncode == 1
    assert "cannot load the policy" in r.stderr and str(bad) in r.stderr


def test_missing_policy_and_open_listen_are_refused(tmp_path: Path) -> None:
    r = run_proctor("serve", "--policy", str(tmp_path / "none.yaml"), cwd=tmp_path)
    assert r.returncode == 2 and "--policy" in r.stderr and "no such file" in r.stderr
    r = run_proctor("serve", "--policy", str(SEED_POLICY), "--listen", "0.0.0.0:1", cwd=tmp_path)
    assert r.returncode == 2 and "loopback" in r.stderr


# -- health and drain -------------------------------------------------------------------


def test_health_goes_not_serving_on_sigterm_and_the_process_exits_0(tmp_path: Path) -> None:
    server = start_proctor(SEED_POLICY, tmp_path)
    seen: list[int] = []
    with grpc.insecure_channel(server.address) as ch:
        stream = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service="proctor.v1.Decisions"), timeout=20
        )
        seen.append(next(stream).status)
        server.send_signal(signal.SIGTERM)
        try:
            for msg in stream:
                seen.append(msg.status)
        except grpc.RpcError:
            pass  # the stream ends when the server stops
    assert server.wait() == 0, server.log()
    assert seen[:2] == [SERVING, NOT_SERVING]
    log = server.log()
    assert '"msg":"draining"' in log and '"msg":"stopped"' in log


def test_sigterm_drains_calls_in_flight(tmp_path: Path) -> None:
    server = start_proctor(SEED_POLICY, tmp_path, "--grace-seconds", "20")
    batch = [
        EvaluationRequest(f"job.{i}.send.email", delegation_path=["a", "b"], risk_tags=["external"])
        for i in range(1000)
    ]
    outcomes: list[tuple[float, float, str]] = []
    in_flight: dict[int, float] = {}  # thread -> when its call began
    lock = threading.Lock()
    stop = threading.Event()

    def caller() -> None:
        with ProctorClient(server.address, timeout=20.0) as c:
            while not stop.is_set():
                began = time.monotonic()
                in_flight[threading.get_ident()] = began
                try:
                    results = c.evaluate_batch(batch)
                    outcome = "ok" if len(results) == 1000 and all(r.ok for r in results) else "bad"
                except ProctorError as e:
                    outcome = e.code.name
                    stop.set()
                with lock:
                    in_flight.pop(threading.get_ident(), None)
                    outcomes.append((began, time.monotonic(), outcome))

    def a_call_is_being_served() -> bool:
        # A call counts as taken up by the server once it has been out for half a typical
        # call: just after it was sent, on a loaded machine, it may still be in the client or
        # the transport, and SIGTERM would then find no call in flight at all.
        with lock:
            if len(outcomes) < 4:
                return False
            typical = statistics.median(ended - began for began, ended, _ in outcomes)
            now = time.monotonic()
            return any(now - began > typical / 2 for began in in_flight.values())

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(a_call_is_being_served, what="a batch being served before SIGTERM")
    sent = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert code == 0, server.log()
    # Calls in flight when SIGTERM arrived finished and answered in full...
    assert any(
        began < sent < ended and what == "ok" for began, ended, what in outcomes
    ), outcomes
    # ...and nothing failed except calls the server had not taken up yet: those found it
    # gone (UNAVAILABLE), or were still queued in the transport when it stopped taking
    # calls (CANCELLED, never handled; only calls sent just before SIGTERM).
    for began, _, what in outcomes:
        assert what in ("ok", "UNAVAILABLE", "CANCELLED"), outcomes
        if what == "CANCELLED":
            assert began > sent - 0.5, outcomes


# -- workers ---------------------------------------------------------------------------


def _two_free_ports() -> int:
    """A port P with P+1 free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def _worker_pid(address: str, method: str = "GetPolicy") -> tuple[str, object]:
    """Ask on a brand-new connection (no shared subchannel), so the kernel picks a worker."""
    opts = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(address, options=opts) as ch:
        stub = admin_pb2_grpc.AdminStub(ch)
        resp, call = stub.GetPolicy.with_call(admin_pb2.GetPolicyRequest(), timeout=5)
    pid = dict((m.key, m.value) for m in call.trailing_metadata())["proctor-worker"]
    return pid, resp


def test_two_workers_share_one_port_and_reload_together(
    tmp_path: Path, redis_proc: RedisProcess
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(versioned("w1"))
    mport = _two_free_ports()
    server = start_proctor(
        policy, tmp_path, "--workers", "2", "--redis-url", redis_proc.url,
        "--reload-poll-seconds", "3600", "--metrics-listen", f"127.0.0.1:{mport}",
    )
    try:
        versions: dict[str, str] = {}

        def both_seen() -> bool:
            pid, resp = _worker_pid(server.address)
            versions[pid] = resp.policy_version  # type: ignore[attr-defined]
            return len(versions) == 2

        wait_for(both_seen, timeout=30, what="answers from both workers")
        assert str(server.pid) not in versions
        assert set(versions.values()) == {"w1"}

        # Evaluate is answered by both workers too, each answer naming its worker.
        evaluators: set[str] = set()

        def both_evaluate() -> bool:
            opts = [("grpc.use_local_subchannel_pool", 1)]
            with grpc.insecure_channel(server.address, options=opts) as ch:
                stub = decisions_pb2_grpc.DecisionsStub(ch)
                req = decisions_pb2.EvaluateRequest(
                    topic="job.1.delegate.internal", delegation_path=["a"]
                )
                resp, call = stub.Evaluate.with_call(req, timeout=5)
            assert resp.decision == decisions_pb2.DECISION_ALLOW
            evaluators.add(dict((m.key, m.value) for m in call.trailing_metadata())[
                "proctor-worker"])
            return evaluators == set(versions)

        wait_for(both_evaluate, timeout=30, what="Evaluate answers from both workers")

        # ReloadPolicy on one worker reaches the other (the file is not polled here).
        write_atomically(policy, versions_text := versioned("w2"))
        assert versions_text
        with grpc.insecure_channel(server.address) as ch:
            stub = admin_pb2_grpc.AdminStub(ch)
            r = stub.ReloadPolicy(admin_pb2.ReloadPolicyRequest(), timeout=10)
        assert r.policy_version == "w2"
        fresh: dict[str, str] = {}

        def both_reloaded() -> bool:
            pid, resp = _worker_pid(server.address)
            fresh[pid] = resp.policy_version  # type: ignore[attr-defined]
            return len(fresh) == 2 and set(fresh.values()) == {"w2"}

        wait_for(both_reloaded, timeout=30, what="both workers on w2")

        # Each worker serves its own metrics on PORT + index.
        for port in (mport, mport + 1):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as m:
                assert 'proctor_policy_info{policy_version="w2"} 1.0' in m.read().decode()
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert server.log().count('"msg":"stopped"') == 2


@pytest.mark.parametrize("sig", [signal.SIGINT])
def test_sigint_also_drains(tmp_path: Path, sig: int) -> None:
    server = start_proctor(SEED_POLICY, tmp_path)
    assert server.stop(sig) == 0, server.log()
