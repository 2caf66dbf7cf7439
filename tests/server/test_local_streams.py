"""Admin.WatchPolicy and Audit.IngestDecisions against a live `proctor serve`."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proctor.server.audit.file_sink import list_segments
from proctor.server.audit.verify import verify_dir
from proctor.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    decisions_pb2,
)
from tests.support.proctor import ProctorProcess, run_proctor, start_proctor
from tests.support.redis import start_redis
from tests.support.wait import wait_until

from .conftest import SEED_POLICY


def versioned(version: str) -> str:
    return f'policy_version: "{version}"\n' + SEED_POLICY.read_text()


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Watch:
    """A WatchPolicy stream read on a thread: snapshots arrive on `.got`."""

    def __init__(self, address: str, heartbeat: int = 0) -> None:
        self.channel = grpc.insecure_channel(address)
        stub = admin_pb2_grpc.AdminStub(self.channel)
        self.call = stub.WatchPolicy(admin_pb2.WatchPolicyRequest(heartbeat_seconds=heartbeat))
        self.got: queue.Queue[admin_pb2.PolicySnapshot | grpc.RpcError] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for snap in self.call:
                self.got.put(snap)
        except grpc.RpcError as e:
            self.got.put(e)

    def next(self, timeout: float = 10.0) -> admin_pb2.PolicySnapshot:
        item = self.got.get(timeout=timeout)
        assert not isinstance(item, grpc.RpcError), item
        return item

    def next_policy(self, timeout: float = 10.0) -> admin_pb2.PolicySnapshot:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.next(max(0.01, deadline - time.monotonic()))
            if not snap.heartbeat:
                return snap

    def worker(self) -> str:
        return dict(self.call.initial_metadata())["proctor-worker"]

    def close(self) -> None:
        self.call.cancel()
        self.channel.close()


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(versioned("v-1"))
    return p


@pytest.fixture
def server(policy: Path, tmp_path: Path) -> Iterator[ProctorProcess]:
    s = start_proctor(policy, tmp_path, "--reload-poll-seconds", "3600")
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


def _reload(address: str) -> tuple[admin_pb2.ReloadPolicyResponse, str]:
    # A connection of its own (grpc shares one between channels to the same target).
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        resp, call = admin_pb2_grpc.AdminStub(ch).ReloadPolicy.with_call(
            admin_pb2.ReloadPolicyRequest(), timeout=10)
        return resp, dict(call.trailing_metadata())["proctor-worker"]


def test_watch_sends_the_policy_then_heartbeats_then_each_reload_within_a_second(
    server: ProctorProcess, policy: Path,
) -> None:
    watch = Watch(server.address, heartbeat=1)
    try:
        first = watch.next()
        assert (first.policy_version, first.text, first.heartbeat) == (
            "v-1", policy.read_text(), False)
        beat = watch.next(timeout=3)
        assert beat.heartbeat and beat.policy_version == "v-1" and not beat.text
        write_atomically(policy, versioned("v-2"))
        _reload(server.address)
        snap = watch.next_policy()  # pushed: the file is polled once an hour here
        assert (snap.policy_version, snap.text) == ("v-2", versioned("v-2"))
    finally:
        watch.close()


def test_a_reload_served_by_another_worker_reaches_the_watcher(
    policy: Path, tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    server = start_proctor(policy, tmp_path, "--workers", "2", "--redis-url", redis.url,
                           "--reload-poll-seconds", "3600")
    watch = Watch(server.address)
    try:
        assert watch.next().policy_version == "v-1"
        watcher = watch.worker()
        wait_until(lambda: server.log().count('"msg":"serving"') == 2, "both workers serving")
        write_atomically(policy, versioned("v-2"))

        def reload_on_the_other_worker() -> bool:
            try:
                _, worker = _reload(server.address)
            except grpc.RpcError as e:  # the other worker may still be starting
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                return False
            return worker != watcher

        # new connections until the kernel picks the other worker
        wait_until(reload_on_the_other_worker, "a reload served by the other worker")
        assert watch.next_policy().policy_version == "v-2"
    finally:
        watch.close()
        server.stop()
        redis.stop()


def test_local_evaluation_off_refuses_watch_policy(policy: Path, tmp_path: Path) -> None:
    server = start_proctor(policy, tmp_path, "--local-evaluation", "off")
    try:
        watch = Watch(server.address)
        item = watch.got.get(timeout=10)
        assert isinstance(item, grpc.RpcError)
        assert item.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--local-evaluation off" in (item.details() or "")
    finally:
        assert server.stop() == 0


def _local(i: int) -> audit_pb2.LocalDecision:
    d = audit_pb2.LocalDecision(
        request=decisions_pb2.EvaluateRequest(
            request_id=f"r{i}", run_id="run-1", tenant="acme", topic=f"job.{i}.export.bulk",
            risk_tags=["bulk-data"], delegation_path=["planner", "etl"]),
        response=decisions_pb2.EvaluateResponse(
            decision=decisions_pb2.DECISION_DENY, rule_id="deny-bulk-export",
            reason="Bulk data export blocked regardless of delegation path",
            policy_version="v-1", decision_id=f"01LOCAL{i:019d}"),
        latency_us=3)
    d.decided_at.GetCurrentTime()
    return d


def _ingest(address: str, batches: list[audit_pb2.IngestBatch]) -> list[audit_pb2.IngestAck]:
    with grpc.insecure_channel(address) as ch:
        return list(audit_pb2_grpc.AuditStub(ch).IngestDecisions(iter(batches), timeout=10))


def test_ingested_decisions_are_recorded_once_as_local_and_verify(
    server: ProctorProcess, tmp_path: Path,
) -> None:
    batches = [audit_pb2.IngestBatch(batch_seq=n, decisions=[_local(n * 10 + k)
                                                              for k in range(10)])
               for n in range(5)]
    acks = _ingest(server.address, batches)
    assert [(a.batch_seq, a.recorded, a.duplicates) for a in acks] == [
        (n, 10, 0) for n in range(5)]
    again = _ingest(server.address, batches[3:])  # a replay after a lost ack
    assert [(a.recorded, a.duplicates) for a in again] == [(0, 10), (0, 10)]

    with grpc.insecure_channel(server.address) as ch:
        seen = list(audit_pb2_grpc.AuditStub(ch).StreamDecisions(
            audit_pb2.StreamDecisionsRequest(filter=audit_pb2.AuditFilter(
                kinds=[audit_pb2.AUDIT_KIND_DECISION])), timeout=10))
    assert sorted(e.decision_id for e in seen) == sorted(
        d.response.decision_id for b in batches for d in b.decisions)
    assert {e.source for e in seen} == {"local"}
    assert json.loads(seen[0].record_json)["source"] == "local"

    shown = run_proctor("audit", "show", "01LOCAL" + "7".zfill(19), "--audit-dir",
                        str(tmp_path / "audit"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "deny-bulk-export" in shown.stdout
    assert verify_dir(tmp_path / "audit").ok
    events = [json.loads(x) for files in list_segments(tmp_path / "audit").values()
              for f in files for x in f.read_bytes().splitlines()]
    assert sum(e.get("source") == "local" for e in events) == 50


def test_a_malformed_item_fails_the_batch_with_invalid_argument(server: ProctorProcess) -> None:
    bad = _local(2)
    bad.request.ClearField("delegation_path")
    approval = _local(3)
    approval.response.decision = decisions_pb2.DECISION_REQUIRE_APPROVAL
    for item, words in ((bad, "batch 7 item 1: request.delegation_path"),
                        (approval, "batch 7 item 1: response.decision")):
        with pytest.raises(grpc.RpcError) as err:
            _ingest(server.address, [audit_pb2.IngestBatch(batch_seq=7,
                                                           decisions=[_local(1), item])])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (err.value.details() or "")


def test_open_streams_end_when_the_server_drains_and_are_bounded(
    policy: Path, tmp_path: Path,
) -> None:
    server = start_proctor(policy, tmp_path, "--max-streams", "1", "--grace-seconds", "30")
    watch = Watch(server.address)
    try:
        assert watch.next().policy_version == "v-1"
        second = Watch(server.address)
        refused = second.got.get(timeout=10)
        assert isinstance(refused, grpc.RpcError)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams" in (refused.details() or "")
        second.close()
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 10  # not the 30 s grace: the stream ended
    finally:
        watch.close()
        server.stop()
