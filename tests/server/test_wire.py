"""server/_wire.c against its reference twins in server/wire.py (upb and engine.Request).

The C decoder may decline a request (None: the reference path decides), but
whatever it accepts must equal what the reference makes of the same bytes, and
it must take the common clean request itself, or the speed is silently lost.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor import engine
from proctor.server import wire
from proctor.v1 import decisions_pb2

C = wire._wire
needs_c = pytest.mark.skipif(
    C is None, reason="proctor.server._wire not built (PROCTOR_PURE_PYTHON=1)")

SEED = decisions_pb2.EvaluateRequest(
    request_id="r-1", run_id="run-7f3a", tenant="acme",
    delegation_path=["orchestrator", "research-agent", "mailer"], topic="job.42.send.email",
    risk_tags=["External", "customer-data", "external"], labels={"env": "prod"},
)


def test_the_extension_is_built() -> None:
    # CI compiles it; a machine without a compiler would silently lose the speed.
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert wire.ACCELERATED and C is not None


def reference(data: bytes) -> Any:
    """What the reference path makes of data: its result, or (exception type, message)."""
    try:
        return wire.decode_evaluate_py(data)
    except (engine.RequestError, wire.DecodeError) as e:
        return (type(e), str(e))


def same_request(a: engine.Request, b: engine.Request) -> bool:
    return a == b and all(
        type(getattr(a, s)) is type(getattr(b, s)) for s in engine.Request.__slots__)


def check(data: bytes) -> Any:
    """The C decoder agrees with the reference on data; returns what C gave."""
    want = reference(data)
    got = C.decode_fast(data)
    if got is not None:
        assert not isinstance(want[0], type), f"C accepted what the reference refuses: {want}"
        assert same_request(got[0], want[0]) and got[1:] == want[1:], (got, want)
    # The composite the server calls answers exactly as the reference does.
    try:
        both = wire.decode_evaluate(data)
    except (engine.RequestError, wire.DecodeError) as e:
        both = (type(e), str(e))
    if isinstance(want[0], type):
        assert both == want
    else:
        assert same_request(both[0], want[0]) and both[1:] == want[1:]
    return got


# Text that exercises every branch: clean ASCII ids, case, spaces at the ends and
# inside, control characters, non-ASCII and astral characters, and lengths around
# each limit.
_ALPHABETS = st.sampled_from([
    "abcxyz019-_:", "ABCdef .", " \t\n\x0b\x0c\r\x1c\x1f", "éü中\U0001f600", "a.b..c*",
])
def text(max_size: int) -> st.SearchStrategy[str]:
    return _ALPHABETS.flatmap(lambda a: st.text(alphabet=a, max_size=max_size)) | st.sampled_from(
        ["", "a" * 64, "a" * 65, "a" * 128, "a" * 129, "é" * 64, "é" * 65, "x" * 256, "x" * 257])


def topics() -> st.SearchStrategy[str]:
    seg = st.text(alphabet="abAB09_:-", min_size=1, max_size=3) | st.sampled_from(
        ["a" * 64, "a" * 65, "", "é", "*"])
    return st.lists(seg, min_size=0, max_size=34).map(".".join) | text(40)


@st.composite
def requests(draw: Any) -> decisions_pb2.EvaluateRequest:
    msg = decisions_pb2.EvaluateRequest(
        request_id=draw(text(130)), run_id=draw(text(130)), tenant=draw(text(130)),
        topic=draw(topics()), approval_id=draw(text(130)), explain=draw(st.booleans()),
    )
    msg.delegation_path.extend(draw(st.lists(text(130), min_size=0, max_size=34)))
    msg.risk_tags.extend(draw(st.lists(text(66), max_size=66)))
    for k, v in draw(st.dictionaries(text(66), text(258), max_size=34)).items():
        msg.labels[k] = v
    return msg


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_decode_agrees_with_the_reference(msg: decisions_pb2.EvaluateRequest) -> None:
    check(msg.SerializeToString())


@st.composite
def clean_requests(draw: Any) -> decisions_pb2.EvaluateRequest:
    ident = st.text(alphabet="abcXYZ019-_:", min_size=1, max_size=20)
    msg = decisions_pb2.EvaluateRequest(
        request_id=draw(ident | st.just("")), run_id=draw(ident | st.just("")),
        tenant=draw(ident | st.just("")), explain=draw(st.booleans()),
        topic=".".join(draw(st.lists(ident, min_size=1, max_size=6))),
    )
    msg.delegation_path.extend(draw(st.lists(ident, min_size=1, max_size=5)))
    msg.risk_tags.extend(draw(st.lists(st.text(alphabet="aBc- z", max_size=8).map(str.strip),
                                       max_size=6)))
    for k, v in draw(st.dictionaries(ident, st.text(max_size=30), max_size=4)).items():
        msg.labels[k] = v
    return msg


@needs_c
@settings(max_examples=300, deadline=None)
@given(clean_requests())
def test_clean_requests_take_the_c_path(msg: decisions_pb2.EvaluateRequest) -> None:
    assert check(msg.SerializeToString()) is not None


@needs_c
def test_seed_request_is_normalized_like_the_engine() -> None:
    req, approval_id, explain = C.decode_fast(SEED.SerializeToString())
    assert req.risk_tags == ("customer-data", "external")
    assert req.delegation_path == ("orchestrator", "research-agent", "mailer")
    assert (req.labels, approval_id, explain) == ({"env": "prod"}, "", False)


@needs_c
@pytest.mark.parametrize(("topic", "valid"), [
    ("a" * 64, True), ("a" * 65, False), ("b." + "a" * 64 + ".c", True),
    ("b." + "a" * 65 + ".c", False), (".".join(["s"] * 32), True), (".".join(["s"] * 33), False),
    (".".join(["a" * 64] * 3 + ["b" * 61]), True),  # 256 bytes
    (".".join(["a" * 64] * 3 + ["b" * 62]), False),  # 257
    ("job..x", False), (".job", False), ("job.", False), ("", False), ("job.*.x", False),
    ("JOB.a_b:c-d.09", True), ("job.é", False), ("job x", False), ("job.\x00", False),
])
def test_topic_limits_are_the_engines(topic: str, valid: bool) -> None:
    msg = decisions_pb2.EvaluateRequest(topic=topic, delegation_path=["a"])
    got = check(msg.SerializeToString())
    assert (got is not None) == valid


@needs_c
@pytest.mark.parametrize(("field", "value", "valid"), [
    ("tenant", "t" * 128, True), ("tenant", "t" * 129, False), ("run_id", "é" * 64, True),
    ("request_id", "r" * 129, False), ("approval_id", "a" * 128, True),
    ("approval_id", "a" * 129, False),
])
def test_id_limits_are_the_engines(field: str, value: str, valid: bool) -> None:
    msg = decisions_pb2.EvaluateRequest(topic="a.b", delegation_path=["a"], **{field: value})
    got = check(msg.SerializeToString())
    if valid:
        assert got is not None or not value.isascii()
    else:
        assert got is None


@needs_c
@pytest.mark.parametrize(("path", "tags", "labels"), [
    (["a"] * 32, [], {}), (["a"] * 33, [], {}), ([""], [], {}), (["x" * 128], [], {}),
    (["x" * 129], [], {}), (["a"], ["t"] * 64, {}), (["a"], ["t"] * 65, {}),
    (["a"], ["T" * 64], {}), (["a"], ["T" * 65], {}), (["a"], [" pii", "PII "], {}),
    (["a"], ["", "b", "B", "a"], {}), (["a"], [], {str(i): "v" for i in range(32)}),
    (["a"], [], {str(i): "v" for i in range(33)}), (["a"], [], {"k" * 64: "v" * 256}),
    (["a"], [], {"k" * 65: "v"}), (["a"], [], {"k": "v" * 257}), (["a"], [], {"": ""}),
])
def test_collection_limits_are_the_engines(
    path: list[str], tags: list[str], labels: dict[str, str]
) -> None:
    msg = decisions_pb2.EvaluateRequest(topic="a.b", delegation_path=path, risk_tags=tags,
                                        labels=labels)
    check(msg.SerializeToString())


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = bytes([number << 3 | wire_type])
    if wire_type == 2:
        return key + bytes([len(payload)]) + payload
    return key + payload


@needs_c
@pytest.mark.parametrize("extra", [
    _field(15, 0, b"\x96\x01"),           # unknown varint
    _field(15, 1, b"12345678"),           # unknown fixed64
    _field(15, 2, b"whatever"),           # unknown length-delimited
    _field(15, 5, b"1234"),               # unknown fixed32
    _field(5, 2, b"job.1.send.email"),    # a second topic: the last one wins
    _field(7, 2, _field(1, 2, b"env")),   # a label with no value: ""
    _field(7, 2, _field(2, 2, b"v")),     # a label with no key: ""
    _field(7, 2, _field(1, 2, b"env") + _field(2, 2, b"dev")),  # the same key again
    _field(9, 0, b"\x02"),                # explain as a varint other than 1
    _field(9, 0, b"\x80\x01"),            # ... and a two-byte one
])
def test_wire_details_agree(extra: bytes) -> None:
    check(SEED.SerializeToString() + extra)


@needs_c
@pytest.mark.parametrize("extra", [
    _field(5, 0, b"\x01"),                # a known field with the wrong wire type
    bytes([5 << 3 | 3]),                  # a group
    b"\x00",                              # field number 0
    b"\x2a\x05ab",                        # a length past the end
    b"\x80",                              # a truncated varint
])
def test_malformed_or_odd_wire_goes_to_the_reference(extra: bytes) -> None:
    data = SEED.SerializeToString() + extra
    assert C.decode_fast(data) is None
    check(data)


@needs_c
def test_random_bytes_and_mutations_never_disagree() -> None:
    rng = random.Random(7)
    base = SEED.SerializeToString()
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
        check(bytes(data[: rng.randint(0, len(data))]))
        check(bytes(rng.randrange(256) for _ in range(rng.randint(0, 40))))


@needs_c
def test_decode_refuses_anything_but_bytes_like() -> None:
    with pytest.raises(TypeError):
        C.decode_fast("not bytes")


@st.composite
def answers(draw: Any) -> tuple[Any, ...]:
    s = text(80)
    return (draw(st.integers(0, 3)), draw(s), draw(s), draw(s), draw(s), draw(s),
            tuple(draw(st.lists(s, max_size=5))), tuple(draw(st.lists(s, max_size=5))))


@needs_c
@settings(max_examples=300, deadline=None)
@given(answers())
def test_encode_is_byte_identical_to_upb(answer: tuple[Any, ...]) -> None:
    assert C.encode_response(*answer) == wire.encode_response_py(*answer)


@needs_c
def test_encode_long_answers_and_bad_arguments() -> None:
    long = ("x" * 3000, "é" * 2000, "r" * 200)
    answer = (3, *long, "01J", "apv_1", ("a",) * 100, ["t"] * 50)
    assert C.encode_response(*answer) == wire.encode_response_py(*answer)
    with pytest.raises(TypeError):
        C.encode_response(1, 2, "", "", "", "", (), ())
    with pytest.raises(ValueError):
        C.encode_response(9, "", "", "", "", "", (), ())
    with pytest.raises(TypeError):
        C.encode_response(1, "", "", "", "", "", ())
    with pytest.raises(UnicodeEncodeError):
        C.encode_response(1, "\ud800", "", "", "", "", (), ())
