"""Envelope unit tests: canonical JSON, the chain hash, HMAC, ids, times."""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import uuid
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.audit.event import (
    canonical,
    format_micros,
    format_time,
    parse_time,
    record_hash,
    record_hmac,
    safe_name,
    seal,
)
from proctor.server.ids import UlidGenerator
from tests.support.ulid import timestamp_ms


def test_canonical_is_sorted_compact_utf8() -> None:
    body = canonical({"b": 1, "a": {"é": "ü", "z": [1, 2]}, "c": "x y"})
    assert body == '{"a":{"z":[1,2],"é":"ü"},"b":1,"c":"x y"}'.encode()


def test_seal_hash_covers_prev_hash_and_line_round_trips() -> None:
    rec = {"seq": 1, "kind": "decision", "topic": "job.1.read.pii", "prev_hash": "abc"}
    line, digest = seal(rec, None)
    assert line.endswith(b"\n")
    stored = json.loads(line)
    assert stored["hash"] == digest == hashlib.sha256(canonical(rec)).hexdigest()
    assert record_hash(stored) == digest
    assert "hmac" not in stored
    other, other_digest = seal({**rec, "prev_hash": "abd"}, None)
    assert other_digest != digest


def test_hmac_uses_the_same_canonical_bytes() -> None:
    rec = {"seq": 7, "writer": "w", "prev_hash": ""}
    line, _ = seal(rec, b"secret")
    stored = json.loads(line)
    want = hmac.new(b"secret", canonical(rec), hashlib.sha256).hexdigest()
    assert stored["hmac"] == want == record_hmac(stored, b"secret")
    assert record_hmac(stored, b"other") != want


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in ("hash", "hmac")),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_record_seals_and_verifies(rec: dict) -> None:
    rec = {**rec, "prev_hash": "p"}
    assert canonical(rec) == json.dumps(
        rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    line, digest = seal(rec, b"k")
    stored = json.loads(line)
    assert record_hash(stored) == digest
    assert record_hmac(stored, b"k") == stored["hmac"]


def _default(value: object) -> object:
    """What the audit writes for a value JSON has no type for (sets sorted, bytes as text)."""
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _stdlib(rec: dict) -> bytes:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=6),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=12)
            | st.floats(max_value=1e-3, min_value=-1e-3) | st.floats(),
            lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
            | st.dictionaries(st.text(max_size=4), inner, max_size=3),
            max_leaves=10,
        ),
        max_size=8,
    )
)
def test_canonical_bytes_are_the_standard_librarys(rec: dict) -> None:
    # Tuples, ints past 64 bits, tiny and non-finite floats: whichever encoder writes
    # the record, the bytes are json.dumps's.
    assert canonical(rec) == _stdlib(rec)


class _Color(enum.Enum):
    RED = 1


class _Text(str):
    pass


@pytest.mark.parametrize("value", [
    _Color.RED, uuid.UUID(int=7), datetime(2026, 1, 2, 3, 4, 5), {3, 1}, b"raw",
    _Text("x"), 2**70, -(2**63) - 1, 1e-7, float("nan"), float("-inf"), {1: "a"},
    ("a", ("b", [1.5e-5])), [{"k": {"n": None}}],
])
def test_canonical_of_values_beyond_plain_json(value: object) -> None:
    rec = {"v": value, "z": "é"}
    assert canonical(rec) == _stdlib(rec)


def test_a_value_json_cannot_write_fails_as_the_standard_library_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        canonical({"v": "\udc80"})
    with pytest.raises(TypeError):
        canonical({1: "a", "b": 2})


def test_event_ids_at_an_event_time_are_unique_and_sortable() -> None:
    ids = UlidGenerator()
    batch = [ids.new(1_700_000_000_000) for _ in range(10_000)]
    assert len(set(batch)) == 10_000 and batch == sorted(batch)
    assert all(len(i) == 26 for i in batch)
    assert ids.new(1_700_000_000_000) < ids.new(1_700_000_001_000)
    assert timestamp_ms(ids.new(1_700_000_005_000)) == 1_700_000_005_000


def test_time_format_is_fixed_width_and_round_trips() -> None:
    a, b = format_time(1_700_000_000.0), format_time(1_700_000_000.123456)
    assert len(a) == len(b) == 27 and a < b
    assert abs(parse_time(b) - 1_700_000_000.123456) < 1e-6


@settings(max_examples=300, deadline=None)
@given(micros=st.integers(min_value=0, max_value=4_102_444_800_000_000))
def test_time_text_matches_datetime(micros: int) -> None:
    from datetime import UTC, datetime, timedelta

    expected = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_micros(micros) == expected
    assert format_time(micros / 1_000_000) == format_micros(round(micros / 1_000_000 * 1e6))


def test_safe_name() -> None:
    assert safe_name("host-1:42:1700") == "host-1_42_1700"


def test_time_text_of_alternating_and_many_seconds() -> None:
    # An approval event formats its own time and its expiry an hour on, call after call;
    # past the cache's size, seconds are forgotten and formatted again, never mixed up.
    from datetime import UTC, datetime, timedelta

    def expected(micros: int) -> str:
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ")

    base = 1_765_000_000_123_456
    for i in range(300):
        for micros in (base + i * 7_919, base + 3_600_000_000 + i * 104_729):
            assert format_micros(micros) == expected(micros)
