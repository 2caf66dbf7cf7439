"""Mutated request bytes on every proctor.v1 method, over a real gRPC socket.

Each method gets PER_METHOD messages made from a valid request by a seeded
generator: truncated, bits flipped, bad and huge tags, lengths far past the end,
wrong wire types, invalid UTF-8 in a string, random bytes. Every answer is
INVALID_ARGUMENT or a real answer (a decision, NOT_FOUND, ...), never UNKNOWN or
INTERNAL; the server logs no traceback, at most a few throttled lines, and
still serves afterwards.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as pbd
from google.protobuf.message import Message

from proctor.v1 import (
    admin_pb2,
    approvals_pb2,
    audit_pb2,
    budgets_pb2,
    decisions_pb2,
    probe_pb2,
)
from tests.support.proctor import ProctorProcess, start_proctor

from .conftest import SEED_POLICY

PER_METHOD = 2000
SEED = 19_3
IN_FLIGHT = 48
# A client deadline passing is an answer only where the server may rightly wait.
WAITS = {"/proctor.v1.Approvals/WaitApproval"}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
MODULES = (decisions_pb2, budgets_pb2, approvals_pb2, audit_pb2, admin_pb2, probe_pb2)


def _methods() -> list[pbd.MethodDescriptor]:
    return [m for module in MODULES for service in module.DESCRIPTOR.services_by_name.values()
            for m in service.methods]


# -- valid seeds ---------------------------------------------------------------------------

_TEXT = {"topic": "job.42.send.email", "tenant": "acme", "unit": "usd", "decision": "approve"}


def _fill(msg: Message, depth: int = 0) -> None:
    """Every field of msg set to a plausible value (nested messages two levels deep)."""
    for field in msg.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                getattr(msg, field.name)["env"] = "prod" if field.message_type.fields_by_name[
                    "value"].type == pbd.FieldDescriptor.TYPE_STRING else 1
            elif depth < 2:
                _fill(getattr(msg, field.name).add() if repeated else getattr(msg, field.name),
                      depth + 1)
            continue
        value = _scalar(field)
        if repeated:
            getattr(msg, field.name).extend([value, value])
        else:
            setattr(msg, field.name, value)


def _scalar(field: pbd.FieldDescriptor) -> Any:
    t = field.type
    if t == pbd.FieldDescriptor.TYPE_STRING:
        if field.name == "delegation_path":
            return "orchestrator"
        return _TEXT.get(field.name, f"{field.name}-1")
    if t == pbd.FieldDescriptor.TYPE_BYTES:
        return b"\x01\x02"
    if t == pbd.FieldDescriptor.TYPE_BOOL:
        return True
    if t == pbd.FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    if t in (pbd.FieldDescriptor.TYPE_DOUBLE, pbd.FieldDescriptor.TYPE_FLOAT):
        return 1.5
    return 1


def seed_message(method: pbd.MethodDescriptor) -> bytes:
    msg = _message_class(method.input_type)()
    _fill(msg)
    return bytes(msg.SerializeToString())


def _message_class(desc: pbd.Descriptor) -> Any:
    for module in MODULES:
        cls = getattr(module, desc.name, None)
        if cls is not None and cls.DESCRIPTOR.full_name == desc.full_name:
            return cls
    raise LookupError(desc.full_name)


# -- mutations -------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _insert(data: bytes, rng: random.Random, piece: bytes) -> bytes:
    at = rng.choice([0, len(data), rng.randint(0, len(data))])
    return data[:at] + piece + data[at:]


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0 and data:  # truncated
        return data[: rng.randrange(len(data))]
    if kind == 1 and data:  # bits flipped
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 2:  # a bad tag: field 0, a field past 2^29, wire types 6 and 7, an open group
        tag = rng.choice([
            b"\x00", b"\x06", b"\x07", _varint((1 << 29) << 3), _varint(((1 << 32) + 3) << 3 | 2),
            b"\x0b", b"\x0c", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ])
        return _insert(data, rng, tag + b"\x01")
    if kind == 3:  # a length far past the end
        field = rng.randint(1, 12)
        return _insert(data, rng, _varint(field << 3 | 2) + _varint(rng.choice(
            [1 << 31, (1 << 32) - 1, 1 << 62, 100])) + b"ab")
    if kind == 4:  # a known field with the wrong wire type
        field, wire = rng.randint(1, 12), rng.choice([0, 1, 2, 5])
        payload = {0: _varint(rng.getrandbits(64)), 1: rng.randbytes(8),
                   2: _varint(3) + b"xyz", 5: rng.randbytes(4)}[wire]
        return _insert(data, rng, _varint(field << 3 | wire) + payload)
    if kind == 5:  # invalid UTF-8 where a string was
        out = bytearray(data)
        letters = [i for i, b in enumerate(out) if 0x61 <= b <= 0x7A]
        for i in rng.sample(letters, min(len(letters), rng.randint(1, 2))):
            out[i] = rng.choice([0xFF, 0xC3, 0x80, 0xED])
        return bytes(out)
    if kind == 6:  # noise
        return rng.randbytes(rng.randint(0, 64))
    if kind == 7:  # a huge varint value in a known field
        field = rng.randint(1, 12)
        return _insert(data, rng, _varint(field << 3) + _varint((1 << 64) - 1))
    return mutate(mutate(data, rng), rng)  # two at once


# -- calls ------------------------------------------------------------------------------------


async def _call(channel: grpc.aio.Channel, method: pbd.MethodDescriptor, path: str,
                data: bytes) -> str:
    """The status name of one call with `data`; a stream read once, then cancelled."""
    if method.client_streaming:
        # One item, then the end of the stream.
        call: Any = channel.stream_stream(path)(iter([data]), timeout=5)
    elif method.server_streaming:
        call = channel.unary_stream(path)(data, timeout=5)
    else:
        try:
            await channel.unary_unary(path)(data, timeout=1 if path in WAITS else 10)
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
        return "OK"
    try:
        try:
            item = await asyncio.wait_for(call.read(), 0.3)
        except TimeoutError:
            return "OPEN"  # the stream was taken: a real answer
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
        if item is grpc.aio.EOF:
            return str((await call.code()).name)
        return "OK"
    finally:
        call.cancel()


async def _gated(gate: asyncio.Semaphore, channel: grpc.aio.Channel,
                 method: pbd.MethodDescriptor, path: str, data: bytes) -> str:
    async with gate:
        return await _call(channel, method, path, data)


async def _fuzz(address: str) -> dict[str, Counter[str]]:
    seen: dict[str, Counter[str]] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)
    async with grpc.aio.insecure_channel(address) as channel:
        for method in _methods():
            path = f"/{method.containing_service.full_name}/{method.name}"
            rng = random.Random(f"{SEED}:{path}")
            seed = seed_message(method)
            inputs = [mutate(seed, rng) for _ in range(PER_METHOD)]
            seen[path] = Counter(await asyncio.gather(
                *[_gated(gate, channel, method, path, d) for d in inputs]))
    return seen


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    p = start_proctor(SEED_POLICY, tmp_path_factory.mktemp("fuzz"), "--log-level", "info")
    try:
        yield p
    finally:
        assert p.stop() == 0, p.log()


def test_mutated_requests_on_every_method(server: ProctorProcess) -> None:
    seen = asyncio.run(_fuzz(server.address))
    bad = {path: {c: n for c, n in counts.items() if c in {s.name for s in NEVER}}
           for path, counts in seen.items()}
    bad = {p: c for p, c in bad.items() if c}
    assert not bad, (bad, seen)
    for path, counts in seen.items():
        assert sum(counts.values()) == PER_METHOD
        if path not in WAITS:
            assert "DEADLINE_EXCEEDED" not in counts, (path, counts)
        # Every method met bytes it could not parse and said so.
        assert counts["INVALID_ARGUMENT"] > 0 or path.endswith(
            ("EvaluateStream", "IngestDecisions")), (path, counts)
    # Still serving: a real decision, and no traceback in the log.
    with grpc.insecure_channel(server.address) as ch:
        answer = decisions_pb2.EvaluateResponse.FromString(ch.unary_unary(
            "/proctor.v1.Decisions/Evaluate")(decisions_pb2.EvaluateRequest(
                topic="job.1.delegate.internal", delegation_path=["orchestrator", "worker"],
            ).SerializeToString(), timeout=5))
    assert answer.decision == decisions_pb2.DECISION_ALLOW
    log = server.log()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 1000):at + 4000]  # the traceback, not the log's tail
    # The malformed ones are logged, throttled: a handful of lines, not thousands.
    assert 0 < log.count('"malformed request"') <= 20, log.count('"malformed request"')


def test_mutations_are_seeded() -> None:
    method = _methods()[0]
    one, two = random.Random(7), random.Random(7)
    a = [mutate(seed_message(method), one) for _ in range(50)]
    assert a == [mutate(seed_message(method), two) for _ in range(50)]
    assert len(set(a)) > 25


def test_log_of_refusals_is_throttled(tmp_path: Path) -> None:
    import logging

    from proctor.server.parsing import Throttled

    now = [0.0]
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.throttled")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    t = Throttled(logger, interval=10.0, clock=lambda: now[0])
    assert t.warning("x") is True
    assert [t.warning("x") for _ in range(5)] == [False] * 5
    now[0] = 10.0
    assert t.warning("x") is True
    assert [r.fields["not_logged"] for r in records] == [0, 5]  # type: ignore[attr-defined]
