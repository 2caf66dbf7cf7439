"""Audit.StreamDecisions served in-process over real gRPC: backlog, filters, follow, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from proctor.server.audit.file_sink import FileSink
from proctor.server.audit.redis_sink import RedisSink
from proctor.server.audit.stream import AuditService
from proctor.server.audit.writer import AuditWriter
from proctor.v1 import audit_pb2, audit_pb2_grpc
from tests.audit.helpers import decision, run


async def _serve(service: AuditService) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    audit_pb2_grpc.add_AuditServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def _record(p: AuditWriter, lo: int, hi: int, **extra) -> None:
    for i in range(lo, hi):
        await p.record("decision", decision(i, outcome="deny" if i % 3 == 0 else "allow", **extra))
    await p.flush()


def test_backlog_filters_follow_and_resume(tmp_path: Path) -> None:
    async def go() -> None:
        p = AuditWriter(FileSink(tmp_path, segment_bytes=4096), writer="w:1")
        await _record(p, 0, 30)
        server, addr = await _serve(AuditService(audit_dir=str(tmp_path), poll_interval=0.02))
        try:
            async with grpc.aio.insecure_channel(addr) as ch:
                stub = audit_pb2_grpc.AuditStub(ch)
                # backlog only, filtered on tenant and decision
                req = audit_pb2.StreamDecisionsRequest(filter=audit_pb2.AuditFilter(
                    tenant="acme", decision="deny", kinds=[audit_pb2.AUDIT_KIND_DECISION]))
                got = [m async for m in stub.StreamDecisions(req)]
                want = [f"d-{i}" for i in range(30) if i % 2 and i % 3 == 0]
                assert [m.decision_id for m in got] == want
                m = got[0]
                assert m.kind == audit_pb2.AUDIT_KIND_DECISION and m.writer == "w:1"
                assert list(m.delegation_path) == ["planner", "etl-1"]
                assert m.labels["env"] == "prod" and m.latency_us == 12 and m.hash
                assert m.time.seconds > 0 and m.record_json.startswith("{")

                # follow: the backlog, then live events as they are written
                call = stub.StreamDecisions(audit_pb2.StreamDecisionsRequest(follow=True))
                seen: list[audit_pb2.AuditEvent] = []
                async for m in call:
                    seen.append(m)
                    if len(seen) == 30:
                        await _record(p, 30, 40)
                    if len(seen) == 35:
                        break
                call.cancel()
                assert [m.seq for m in seen] == list(range(1, 36))

                # a reconnect from the last cursor misses nothing and repeats nothing
                await _record(p, 40, 45)
                req = audit_pb2.StreamDecisionsRequest(cursor=seen[-1].cursor)
                rest = [m async for m in stub.StreamDecisions(req)]
                assert [m.seq for m in rest] == list(range(36, 46))

                # topic prefix
                req = audit_pb2.StreamDecisionsRequest(
                    filter=audit_pb2.AuditFilter(topic_prefix="job.4"))
                assert [m.decision_id async for m in stub.StreamDecisions(req)] == [
                    "d-4", "d-40", "d-41", "d-42", "d-43", "d-44"]

                with pytest.raises(grpc.aio.AioRpcError) as err:
                    req = audit_pb2.StreamDecisionsRequest(cursor="r1.5-0")
                    [m async for m in stub.StreamDecisions(req)]
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await server.stop(None)
            await p.close()

    run(go)


def test_stream_cursor_over_redis(redis_proc, tmp_path: Path) -> None:
    async def go() -> None:
        sink = RedisSink(redis_proc.url, "proctor:audit", tmp_path / "spool")
        p = AuditWriter(sink, writer="w:r")
        await _record(p, 0, 10)
        svc = AuditService(redis_url=redis_proc.url, stream="proctor:audit", poll_interval=0.02)
        server, addr = await _serve(svc)
        try:
            async with grpc.aio.insecure_channel(addr) as ch:
                stub = audit_pb2_grpc.AuditStub(ch)
                got = [m async for m in stub.StreamDecisions(audit_pb2.StreamDecisionsRequest())]
                assert [m.seq for m in got] == list(range(1, 11))
                assert got[4].cursor.startswith("r1.")
                call = stub.StreamDecisions(
                    audit_pb2.StreamDecisionsRequest(cursor=got[4].cursor, follow=True))
                seen = []
                async for m in call:
                    seen.append(m.seq)
                    if len(seen) == 5:
                        await _record(p, 10, 13)
                    if len(seen) == 8:
                        break
                call.cancel()
                assert seen == list(range(6, 14))
        finally:
            await server.stop(None)
            await p.close()

    asyncio.run(go())
