"""Audit.StreamDecisions through the shared tail, over real gRPC: many followers, a follower
that lags past the tail's ring, and the per-caller limit."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.redis_sink import RedisSink
from proctor.server.audit.stream import AuditService
from proctor.server.audit.writer import AuditWriter
from proctor.v1 import audit_pb2, audit_pb2_grpc, decisions_pb2, decisions_pb2_grpc
from tests.audit.helpers import decision
from tests.support.proctor import start_proctor
from tests.support.wait import wait_until, wait_until_async

ROOT = Path(__file__).resolve().parents[2]
FOLLOW = audit_pb2.StreamDecisionsRequest(follow=True)
# A client that does not read stops the server's sends after one small HTTP/2 window
# (no BDP probing growing it), so a paused follower really lags.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]


async def _serve(service: AuditService) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    audit_pb2_grpc.add_AuditServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _record(p: AuditWriter, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        await p.record("decision", decision(i))
    await p.flush()


async def _take(call: Any, n: int, out: list[audit_pb2.AuditEvent]) -> None:
    async for m in call:
        out.append(m)
        if len(out) == n:
            return


async def _backlog(stub: audit_pb2_grpc.AuditStub, cursor: str = "") -> list[Any]:
    req = audit_pb2.StreamDecisionsRequest(cursor=cursor)
    return [m async for m in stub.StreamDecisions(req)]


def _check_followers(followers: list[list[Any]], alone: list[Any], n: int) -> None:
    """Every follower saw every event once, in order, with the cursors a lone reader of
    the backlog computes."""
    want_seq = [m.seq for m in alone]
    assert want_seq == list(range(1, n + 1))
    for got in followers:
        assert [m.seq for m in got] == want_seq
        assert [m.cursor for m in got] == [m.cursor for m in alone]
        assert [m.record_json for m in got] == [m.record_json for m in alone]


@pytest.mark.parametrize("backlog", [0, 40])
def test_many_followers_see_every_event_in_order(tmp_path: Path, backlog: int) -> None:
    async def go() -> None:
        p = AuditWriter(FileSink(tmp_path, segment_bytes=8192), writer="w:1")
        await _record(p, 0, backlog)
        svc = AuditService(audit_dir=str(tmp_path), poll_interval=0.02,
                           max_streams_per_principal=100)
        server, addr = await _serve(svc)
        n = 300
        try:
            async with grpc.aio.insecure_channel(addr) as ch:
                stub = audit_pb2_grpc.AuditStub(ch)
                calls = [stub.StreamDecisions(FOLLOW) for _ in range(24)]
                seen: list[list[Any]] = [[] for _ in calls]
                tasks = [asyncio.create_task(_take(c, n, s))
                         for c, s in zip(calls, seen, strict=True)]
                for lo in range(backlog, n, 20):  # written while they follow
                    await _record(p, lo, min(lo + 20, n))
                    await asyncio.sleep(0.01)
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                for c in calls:
                    c.cancel()
                alone = await _backlog(stub)
                _check_followers(seen, alone, n)
                # a cursor from the tail resumes exactly after its event
                rest = await _backlog(stub, seen[3][99].cursor)
                assert [m.seq for m in rest] == list(range(101, n + 1))
        finally:
            await server.stop(None)
            await p.close()

    asyncio.run(go())


async def _lagging(stub_for: Any, p: AuditWriter, n: int) -> list[list[Any]]:
    """A follower that keeps up and one that stops reading while n events are written,
    then reads on: both sets of events."""
    fast_stub, slow_stub = stub_for(), stub_for()
    await _record(p, 0, 5)
    fast, slow = fast_stub.StreamDecisions(FOLLOW), slow_stub.StreamDecisions(FOLLOW)
    got_fast: list[Any] = []
    got_slow: list[Any] = []
    await asyncio.wait_for(_take(slow, 5, got_slow), 30)  # on the tail, then paused
    fast_task = asyncio.create_task(_take(fast, n, got_fast))
    for lo in range(5, n, 50):
        await _record(p, lo, min(lo + 50, n))
    await asyncio.wait_for(fast_task, 60)
    await asyncio.wait_for(_take(slow, n, got_slow), 60)
    fast.cancel()
    slow.cancel()
    return [got_fast, got_slow]


def test_a_follower_that_lags_past_the_ring_still_gets_everything(tmp_path: Path) -> None:
    async def go() -> None:
        p = AuditWriter(FileSink(tmp_path / "a", segment_bytes=16384), writer="w:1")
        svc = AuditService(audit_dir=str(tmp_path / "a"), poll_interval=0.02,
                           ring_events=16)
        server, addr = await _serve(svc)
        channels = []

        def stub_for() -> audit_pb2_grpc.AuditStub:
            channels.append(grpc.aio.insecure_channel(addr, options=SMALL_WINDOW))
            return audit_pb2_grpc.AuditStub(channels[-1])

        try:
            n = 1500
            followers = await _lagging(stub_for, p, n)
            _check_followers(followers, await _backlog(stub_for()), n)
            assert len(list((tmp_path / "a").glob("*.jsonl"))) > 3  # across segments
        finally:
            for ch in channels:
                await ch.close()
            await server.stop(None)
            await p.close()

    asyncio.run(go())


def test_a_lagging_follower_over_redis(redis_proc, tmp_path: Path) -> None:
    async def go() -> None:
        p = AuditWriter(RedisSink(redis_proc.url, "proctor:audit", tmp_path / "spool"),
                        writer="w:r")
        svc = AuditService(redis_url=redis_proc.url, stream="proctor:audit",
                           poll_interval=0.02, ring_events=16)
        server, addr = await _serve(svc)
        channels = []

        def stub_for() -> audit_pb2_grpc.AuditStub:
            channels.append(grpc.aio.insecure_channel(addr, options=SMALL_WINDOW))
            return audit_pb2_grpc.AuditStub(channels[-1])

        try:
            n = 1500
            followers = await _lagging(stub_for, p, n)
            _check_followers(followers, await _backlog(stub_for()), n)
        finally:
            for ch in channels:
                await ch.close()
            await server.stop(None)
            await p.close()

    asyncio.run(go())


def test_audit_streams_per_caller_answer_resource_exhausted(tmp_path: Path) -> None:
    """Through `proctor serve`: in development mode the limit holds per connection."""
    server = start_proctor(ROOT / "examples" / "safety.yaml", tmp_path,
                           "--max-audit-streams-per-principal", "2")

    def opened(stub: audit_pb2_grpc.AuditStub) -> Any:
        call = stub.StreamDecisions(FOLLOW, timeout=60)
        assert next(call).kind == audit_pb2.AUDIT_KIND_DECISION  # admitted: the backlog
        return call

    try:
        with grpc.insecure_channel(server.address, options=SMALL_WINDOW) as ch:
            decisions_pb2_grpc.DecisionsStub(ch).Evaluate(decisions_pb2.EvaluateRequest(
                topic="job.1.read.docs", delegation_path=["planner"], tenant="acme"))
            stub = audit_pb2_grpc.AuditStub(ch)
            first = [opened(stub), opened(stub)]
            with pytest.raises(grpc.RpcError) as err:
                opened(stub)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-audit-streams-per-principal" in err.value.details()
            with grpc.insecure_channel(server.address, options=SMALL_WINDOW) as other:
                # another connection is another caller here
                again = opened(audit_pb2_grpc.AuditStub(other))
                again.cancel()
            first[0].cancel()

            def admitted_again() -> bool:
                try:
                    opened(stub).cancel()
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    return False
                return True

            wait_until(admitted_again, "a slot freed by a closed stream")
            first[1].cancel()
    finally:
        server.stop()


AUDITORS = """
principals:
  - id: auditor-a
    roles: [auditor, agent]
    tenants: ["*"]
    agents: ["*"]
    tokens: ["{a}"]
  - id: auditor-b
    roles: [auditor]
    tenants: ["*"]
    tokens: ["{b}"]
"""


def test_audit_streams_per_principal_count_across_connections(tmp_path: Path) -> None:
    """With identities the limit is the principal's, whatever connection it uses."""
    from proctor.server.auth.tokens import hash_token

    (tmp_path / "principals.yaml").write_text(
        AUDITORS.format(a=hash_token("tok-a"), b=hash_token("tok-b")))
    server = start_proctor(ROOT / "examples" / "safety.yaml", tmp_path,
                           "--principals", str(tmp_path / "principals.yaml"),
                           "--max-audit-streams-per-principal", "1")
    a = [("authorization", "Bearer tok-a")]
    b = [("authorization", "Bearer tok-b")]
    try:
        with (grpc.insecure_channel(server.address, options=SMALL_WINDOW) as one,
              grpc.insecure_channel(server.address, options=SMALL_WINDOW) as two):
            decisions_pb2_grpc.DecisionsStub(one).Evaluate(decisions_pb2.EvaluateRequest(
                topic="job.1.read.docs", delegation_path=["planner"], tenant="acme"),
                metadata=a)
            held = audit_pb2_grpc.AuditStub(one).StreamDecisions(FOLLOW, metadata=a, timeout=60)
            assert next(held).kind == audit_pb2.AUDIT_KIND_DECISION
            with pytest.raises(grpc.RpcError) as err:
                next(audit_pb2_grpc.AuditStub(two).StreamDecisions(FOLLOW, metadata=a, timeout=60))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "'auditor-a'" in err.value.details()
            assert "--max-audit-streams-per-principal" in err.value.details()
            other = audit_pb2_grpc.AuditStub(two).StreamDecisions(FOLLOW, metadata=b, timeout=60)
            assert next(other).kind == audit_pb2.AUDIT_KIND_DECISION  # B is unaffected
            other.cancel()
            held.cancel()
    finally:
        server.stop()


def test_a_dawdling_follower_across_segments_and_a_new_writer(tmp_path: Path) -> None:
    """A follower that reads slowly, falling behind the ring and rejoining again and again
    while segments rotate and a second writer (a new process) starts: still every event
    once, each writer's in order."""
    async def go() -> None:
        root = tmp_path / "a"
        p1 = AuditWriter(FileSink(root, segment_bytes=2048), writer="w:1")
        p2 = AuditWriter(FileSink(root, segment_bytes=2048), writer="w:2")
        svc = AuditService(audit_dir=str(root), poll_interval=0.02, ring_events=16)
        server, addr = await _serve(svc)
        ch = grpc.aio.insecure_channel(addr, options=SMALL_WINDOW)
        n = 5 + 600 * 2
        got: list[Any] = []

        async def dawdle() -> None:
            async for m in audit_pb2_grpc.AuditStub(ch).StreamDecisions(FOLLOW):
                got.append(m)
                if len(got) % 8 == 0:
                    await asyncio.sleep(0.005)
                if len(got) == n:
                    return

        try:
            await _record(p1, 0, 5)
            reading = asyncio.create_task(dawdle())
            await wait_until_async(lambda: len(got) >= 5, "the backlog")
            for lo in range(5, 605, 20):
                await _record(p1, lo, lo + 20)
                await _record(p2, lo, lo + 20)
            await asyncio.wait_for(reading, 120)
            for writer in ("w:1", "w:2"):
                seqs = [m.seq for m in got if m.writer == writer]
                assert seqs == list(range(1, len(seqs) + 1))
            assert len({(m.writer, m.seq) for m in got}) == len(got) == n
        finally:
            await ch.close()
            await server.stop(None)
            await p1.close()
            await p2.close()

    asyncio.run(go())


def test_entries_that_are_not_events_do_not_end_a_backlog_early(redis_proc, tmp_path) -> None:
    async def go() -> None:
        import redis

        from proctor.server.audit.redis_sink import EVENT_FIELD

        p = AuditWriter(RedisSink(redis_proc.url, "proctor:audit", tmp_path / "spool"),
                        writer="w:r")
        await _record(p, 0, 20)
        r = redis.Redis.from_url(redis_proc.url)
        for _ in range(40):
            r.xadd("proctor:audit", {EVENT_FIELD: b"not an event"})
        r.close()
        await _record(p, 20, 40)
        svc = AuditService(redis_url=redis_proc.url, stream="proctor:audit", poll_interval=0.02)
        server, addr = await _serve(svc)
        try:
            async with grpc.aio.insecure_channel(addr) as ch:
                got = await _backlog(audit_pb2_grpc.AuditStub(ch))
                assert [m.seq for m in got] == list(range(1, 41))
        finally:
            await server.stop(None)
            await p.close()

    asyncio.run(go())
