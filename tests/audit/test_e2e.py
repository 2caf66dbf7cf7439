"""End to end with real `proctor serve` processes: every answered decision is in the audit."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import grpc
import redis

from proctor.server.audit.file_sink import list_segments
from proctor.server.audit.verify import verify_dir, verify_stream
from proctor.v1 import decisions_pb2, decisions_pb2_grpc
from tests.audit.test_redis_sink import STREAM, durable_redis  # noqa: F401 - fixture
from tests.support.proctor import run_proctor, start_proctor

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
TOPICS = [("job.{i}.send.email", ["external"]), ("job.{i}.read.pii", ["pii"]),
          ("job.{i}.delegate.internal", []), ("job.{i}.export.bulk", ["bulk-data"])]


def _request(i: int) -> decisions_pb2.EvaluateRequest:
    topic, tags = TOPICS[i % len(TOPICS)]
    return decisions_pb2.EvaluateRequest(
        request_id=f"r-{i}", run_id="run-e2e", tenant="acme", topic=topic.format(i=i),
        risk_tags=tags, delegation_path=["planner", "worker"],
    )


def _evaluate(address: str, lo: int, hi: int) -> list[str]:
    with grpc.insecure_channel(address) as ch:
        stub = decisions_pb2_grpc.DecisionsStub(ch)
        return [stub.Evaluate(_request(i), timeout=10).decision_id for i in range(lo, hi)]


def _file_events(root: Path) -> list[dict]:
    out = []
    for files in list_segments(root).values():
        for f in files:
            out += [json.loads(x) for x in f.read_bytes().splitlines(keepends=True)
                    if x.endswith(b"\n")]
    return out


def _wait_on_disk(audit: Path, ids: list[str], timeout: float = 10.0) -> None:
    """The last batches linger up to 250 ms before they are written (async durability):
    wait for them, so that a tail afterwards is about what it serves, not that timing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (
            set(ids) <= {e.get("decision_id") for e in _file_events(audit)}):
        time.sleep(0.02)


def test_n_evaluations_give_n_verified_decision_events(tmp_path: Path) -> None:
    key = tmp_path / "hmac.key"
    key.write_text("k3y\n")
    srv = start_proctor(SEED, tmp_path / "p", "--audit-hmac-key-file", str(key))
    try:
        ids = _evaluate(srv.address, 0, 200)
        _wait_on_disk(tmp_path / "p" / "audit", ids)
        tail = run_proctor("audit", "tail", "--server", srv.address, "--json", cwd=tmp_path)
        assert tail.returncode == 0, tail.stderr
        # Approval steps share the stream; the decisions must be exactly the answered ones.
        streamed = [ev["decision_id"] for ev in map(json.loads, tail.stdout.splitlines())
                    if ev["kind"] == "decision"]
    finally:
        assert srv.stop() == 0
    audit = tmp_path / "p" / "audit"
    evs = [e for e in _file_events(audit) if e["kind"] == "decision"]
    assert [e["decision_id"] for e in evs] == ids
    assert streamed[: len(ids)] == ids  # StreamDecisions served the same record
    rep = verify_dir(audit, b"k3y")
    assert rep.ok and rep.events == len(_file_events(audit)), rep.render()
    done = run_proctor("audit", "verify", "--audit-dir", str(audit), "--hmac-key-file", str(key),
                       cwd=tmp_path)
    assert done.returncode == 0 and f"OK: {rep.events} events" in done.stdout


def test_redis_outage_mid_run_counts_the_same(durable_redis, tmp_path: Path) -> None:  # noqa: F811
    srv = start_proctor(SEED, tmp_path / "p", "--audit", "redis", "--redis-url", durable_redis.url,
                        "--audit-stream", STREAM)
    try:
        ids = _evaluate(srv.address, 0, 100)
        durable_redis.stop()
        ids += _evaluate(srv.address, 100, 200)  # answered while the stream is unreachable
        time.sleep(1.0)  # past the writer's linger: a batch meets the outage and spools
        durable_redis.start()
        ids += _evaluate(srv.address, 200, 300)
    finally:
        assert srv.stop() == 0
    assert "spooling" in srv.log(), "the outage must have been seen by the sink"
    r = redis.Redis.from_url(durable_redis.url)
    evs = [json.loads(f[b"event"]) for _, f in r.xrange(STREAM)]
    r.close()
    decided = [e for e in evs if e["kind"] == "decision"]
    assert len(decided) == 300
    assert [e["decision_id"] for e in decided] == ids
    rep = verify_stream(durable_redis.url, STREAM)
    assert rep.ok, rep.render()


def test_sync_durability_server_sigkill_keeps_every_answer(tmp_path: Path) -> None:
    srv = start_proctor(SEED, tmp_path / "p", "--audit-durability", "sync")
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(k: int) -> None:
        with grpc.insecure_channel(srv.address) as ch:
            stub = decisions_pb2_grpc.DecisionsStub(ch)
            i = k * 1_000_000
            while not stop.is_set():
                try:
                    d = stub.Evaluate(_request(i), timeout=5).decision_id
                except grpc.RpcError:
                    return
                with lock:
                    answered.append(d)
                i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        while True:
            with lock:
                if len(answered) >= 600:
                    break
            threading.Event().wait(0.01)
        srv.stop(sig=signal.SIGKILL)  # in the middle of the traffic
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        srv.stop()
    on_disk = {e.get("decision_id") for e in _file_events(tmp_path / "p" / "audit")}
    missing = [d for d in answered if d not in on_disk]
    assert not missing, f"{len(missing)} of {len(answered)} answered decisions not on disk"
    assert verify_dir(tmp_path / "p" / "audit").ok


def test_replay_cli_against_a_served_audit(tmp_path: Path) -> None:
    srv = start_proctor(SEED, tmp_path / "p")
    try:
        _evaluate(srv.address, 0, 40)
    finally:
        srv.stop()
    strict = tmp_path / "strict.yaml"
    strict.write_text(SEED.read_text().replace(
        'decision: require_approval\n    reason: "Customer data access requires review"',
        'decision: deny\n    reason: "no more customer data"'))
    out = run_proctor("replay", "--policy", str(strict), "--audit", str(tmp_path / "p" / "audit"),
                      "--json", cwd=tmp_path)
    res = json.loads(out.stdout)
    assert (res["total"], res["escalated"], res["relaxed"]) == (40, 10, 0)


def test_two_workers_two_chains_and_any_worker_serves_the_whole_audit(redis_proc, tmp_path):
    srv = start_proctor(SEED, tmp_path / "p", "--workers", "2", "--redis-url", redis_proc.url)
    audit = tmp_path / "p" / "audit"
    try:
        ids: list[str] = []
        deadline = time.monotonic() + 20
        # a fresh channel per call spreads the calls over the workers (SO_REUSEPORT), once
        # both listen: go on until both writers have written
        while len(ids) < 40 or (len(list_segments(audit)) < 2 and time.monotonic() < deadline):
            ids += _evaluate(srv.address, len(ids), len(ids) + 1)
            if len(ids) % 20 == 0:
                time.sleep(0.05)
        _wait_on_disk(audit, ids)
        tail = run_proctor("audit", "tail", "--server", srv.address, "--json", cwd=tmp_path)
    finally:
        assert srv.stop() == 0
    streamed = [ev for ev in map(json.loads, tail.stdout.splitlines()) if ev["kind"] == "decision"]
    assert sorted(e["decision_id"] for e in streamed) == sorted(ids)
    rep = verify_dir(audit)
    assert rep.ok and rep.events == len(_file_events(audit)), rep.render()
    assert rep.writers == 2 == len({e["writer"] for e in streamed})
