"""The principals file reloaded while calls flow: good and bad files, zero failed calls."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc

from proctor.server.auth.tokens import hash_token
from proctor.v1 import decisions_pb2
from tests.support.proctor import start_proctor
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"
ENTRY = """  - id: {id}
    roles: [agent]
    tenants: [acme]
    agents: ["*"]
    tokens: ["{hash}"]
"""


def _file(*ids: str) -> str:
    return "principals:\n" + "".join(ENTRY.format(id=i, hash=hash_token(f"tok-{i}"))
                                     for i in ids)


def test_reloads_good_and_bad_under_load_fail_no_call(tmp_path: Path) -> None:
    f = tmp_path / "principals.yaml"
    f.write_text(_file("steady"))
    server = start_proctor(SEED_POLICY, tmp_path, "--principals", str(f),
                           "--reload-poll-seconds", "0.05")
    stop = threading.Event()
    outcomes: dict[str, int] = {}
    request = decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal",
                                            delegation_path=["planner"])

    def load() -> None:
        with grpc.insecure_channel(server.address) as ch:
            call = ch.unary_unary(
                "/proctor.v1.Decisions/Evaluate",
                request_serializer=decisions_pb2.EvaluateRequest.SerializeToString,
                response_deserializer=decisions_pb2.EvaluateResponse.FromString)
            while not stop.is_set():
                try:
                    call(request, metadata=[("authorization", "Bearer tok-steady")], timeout=10)
                    key = "OK"
                except grpc.RpcError as e:
                    key = e.code().name
                outcomes[key] = outcomes.get(key, 0) + 1

    def works(token: str) -> bool:
        with grpc.insecure_channel(server.address) as ch:
            call = ch.unary_unary(
                "/proctor.v1.Decisions/Evaluate",
                request_serializer=decisions_pb2.EvaluateRequest.SerializeToString,
                response_deserializer=decisions_pb2.EvaluateResponse.FromString)
            try:
                call(request, metadata=[("authorization", f"Bearer {token}")], timeout=10)
                return True
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
                return False

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(5):
            f.write_text(_file("steady", f"new-{i}"))  # good: a principal added
            wait_until(lambda i=i: works(f"tok-new-{i}"), f"new-{i} accepted", 20)
            f.write_text("principals: [")  # bad: the old principals stay
            server.send_signal(signal.SIGHUP)
            wait_until(lambda: "principals reload failed" in server.log(),
                       "the bad file reported", 20)
            assert works(f"tok-new-{i}")
        wait_until(lambda: outcomes.get("OK", 0) > 200, "calls to flow", 60)
    finally:
        stop.set()
        for t in threads:
            t.join()
        assert server.stop() == 0, server.log()
    assert set(outcomes) == {"OK"}, outcomes
