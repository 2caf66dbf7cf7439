"""Races: 48 concurrent clients across 2 OS processes against one Redis and a limit of 500
grant exactly 500, round after round; with the Redis store used directly, and over gRPC
through two real `proctor serve` processes sharing the Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from grpc_health.v1 import health_pb2

from tests.support.proctor import start_proctor
from tests.support.wait import wait_until

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
version: v1
rules:
  - id: allow-all
    match: {topics: ["**"]}
    decision: allow
    reason: "race"
budgets:
  - {id: race, unit: calls, limit: 500, scope: fleet}
"""


def _start_race(mode: str, targets: list[str], name: str,
                start_at: float) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.budgets.race_worker", mode, target, f"{name}/p{i}",
             str(start_at), "24"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, target in enumerate(targets)
    ]


def _finish(procs: list[subprocess.Popen[str]]) -> tuple[list[str], int]:
    granted: list[str] = []
    retries = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        result = json.loads(out)
        granted += result["granted"]
        retries += result["retries"]
    return granted, retries


def _race(mode: str, targets: list[str], name: str) -> list[str]:
    return _finish(_start_race(mode, targets, name, time.time() + 1.5))[0]


def test_store_race_grants_exactly_the_limit(store_redis: Any) -> None:
    for _ in range(3):
        fleet = f"race-{uuid.uuid4().hex[:8]}"
        granted = _race("store", [store_redis.url] * 2, fleet)
        assert len(granted) == 500 and len(set(granted)) == 500
        r = redis.Redis(port=store_redis.port, decode_responses=True)
        try:
            key = next(iter(r.scan_iter(match=f"proctor:{{{fleet}}}:c:*")))
            assert r.hgetall(key) == {"reserved": "500"}
        finally:
            r.close()


def test_grpc_race_across_two_servers_grants_exactly_the_limit(redis_proc: Any,
                                                               tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    servers = [start_proctor(policy, tmp_path / f"s{i}", "--redis-url", redis_proc.url)
               for i in range(2)]
    r = redis.Redis(port=redis_proc.port, decode_responses=True)
    try:
        for round_ in range(3):
            r.flushall()
            granted = _race("grpc", [s.address for s in servers], f"round{round_}")
            assert len(granted) == 500 and len(set(granted)) == 500
            key = next(iter(r.scan_iter(match="proctor:{default}:c:*")))
            assert r.hgetall(key) == {"reserved": "500"}
    finally:
        r.close()
        for s in servers:
            s.stop()


def test_proctor_serve_on_redis_cluster(redis_cluster: Any, tmp_path: Path) -> None:
    import grpc

    from proctor.v1 import budgets_pb2, budgets_pb2_grpc

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("scope: fleet}", "scope: fleet, window: 30s}"))
    server = start_proctor(policy, tmp_path / "s", "--redis-url", redis_cluster.url + "?cluster=1")
    try:
        with grpc.insecure_channel(server.address) as ch:
            stub = budgets_pb2_grpc.BudgetsStub(ch)
            req = budgets_pb2.ReserveBudgetRequest(reservation_id=uuid.uuid4().hex, unit="calls",
                                                   amount=3, ttl_seconds=60)
            r = stub.ReserveBudget(req, timeout=5)
            assert r.granted and r.budgets[0].reserved >= 3 and r.budgets[0].window == "30s"
            c = stub.CommitBudget(budgets_pb2.CommitBudgetRequest(
                reservation_id=req.reservation_id, actual=2), timeout=5)
            assert c.budgets[0].used >= 2
    finally:
        server.stop()


def test_redis_killed_mid_race_never_over_grants(tmp_path: Path) -> None:
    """SIGKILL Redis (AOF, fsync always) while 48 clients on 2 servers race for 2,000 units,
    restart it a moment later: clients see UNAVAILABLE, retry the same ids, and the servers
    recover by themselves; exactly 2,000 distinct grants, counted once each."""
    from tests.support.ports import free_port
    from tests.support.redis import RedisProcess

    redis_proc = RedisProcess(port=free_port(), workdir=tmp_path / "redis",
                              extra=("--appendonly", "yes", "--appendfsync", "always")).start()
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("limit: 500", "limit: 2000"))
    servers = [start_proctor(policy, tmp_path / f"s{i}", "--redis-url", redis_proc.url)
               for i in range(2)]
    try:
        start_at = time.time() + 1.5
        procs = _start_race("grpc", [s.address for s in servers], "crash", start_at)
        watcher = redis.Redis(port=redis_proc.port, decode_responses=True)
        try:
            wait_until(lambda: any(int(watcher.hget(k, "reserved") or 0) > 0
                                   for k in watcher.scan_iter(match="proctor:{default}:c:*")),
                       "the race to begin")
        finally:
            watcher.close()
        redis_proc.kill()
        # down until both servers have seen it (their health follows the store)
        wait_until(lambda: all(s.health("proctor.v1.Budgets") == NOT_SERVING for s in servers),
                   "both servers to see Redis gone")
        redis_proc.start()
        granted, retries = _finish(procs)
        assert retries > 0  # the kill landed mid-race
        assert len(granted) == 2000 and len(set(granted)) == 2000
        r = redis.Redis(port=redis_proc.port, decode_responses=True)
        try:
            key = next(iter(r.scan_iter(match="proctor:{default}:c:*")))
            assert r.hgetall(key) == {"reserved": "2000"}
        finally:
            r.close()
    finally:
        for s in servers:
            s.stop()
        redis_proc.stop()
