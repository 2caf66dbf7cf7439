"""Envelope unit tests: canonical JSON, the chain hash, HMAC, ids, times."""

from __future__ import annotations

import hashlib
import hmac
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.audit.event import (
    DECISION_FIELDS,
    canonical,
    format_micros,
    format_time,
    parse_time,
    plain,
    quote,
    record_hash,
    record_hmac,
    safe_name,
    seal,
    seal_decision,
)
from proctor.server.ids import UlidGenerator, timestamp_ms


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


def test_plain_means_nothing_to_escape() -> None:
    assert plain("01JDXYZ") and plain("ab" * 32) and plain("")
    assert not plain('a"b') and not plain("a\\b") and not plain("\n") and plain("é")


def test_safe_name() -> None:
    assert safe_name("host-1:42:1700") == "host-1_42_1700"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_names = st.lists(_text, max_size=4)
# The envelope values the pipeline hands the template: ULIDs, times, hex digests.
_plain = st.text(st.sampled_from("0123456789abcdefABCDEFXYZ:.-TZ"), max_size=64)


@settings(max_examples=300, deadline=None)
@given(
    strings=st.fixed_dictionaries({
        k: _text for k in ("request_id", "run_id", "tenant", "topic", "outcome", "rule_id",
                           "reason", "policy_version", "decision_id", "approval_id")
    }),
    path=_names.map(tuple), derived=_names.map(tuple), tags=_names,
    labels=st.dictionaries(_text, _text, max_size=4),
    latency=st.integers(min_value=0, max_value=10**9),
    seq=st.integers(min_value=1, max_value=10**12),
    writer=_text, prev=_plain, stamp=_plain, event_id=_plain,
    key=st.one_of(st.none(), st.binary(min_size=1, max_size=16)),
)
def test_decision_template_writes_the_generic_bytes(
    strings: dict[str, str], path: tuple[str, ...], derived: tuple[str, ...], tags: list[str],
    labels: dict[str, str], latency: int, seq: int, writer: str, prev: str, stamp: str,
    event_id: str, key: bytes | None,
) -> None:
    fields = {**strings, "delegation_path": path, "derived_tags": derived, "risk_tags": tags,
              "labels": labels, "latency_us": latency}
    assert fields.keys() == DECISION_FIELDS
    fast = seal_decision(fields, event_id, seq, stamp, quote(writer), prev, key)
    rec = {**fields, "event_id": event_id, "seq": seq, "time": stamp, "kind": "decision",
           "writer": writer, "prev_hash": prev}
    assert fast == seal(rec, key)


def test_decision_template_gives_the_same_bytes_from_its_cache() -> None:
    fields = {"request_id": "r", "run_id": "", "tenant": "acme", "topic": "job.1.x",
              "outcome": "deny", "rule_id": "no-\"x\"", "reason": "bad\n", "policy_version": "v",
              "decision_id": "d", "approval_id": "", "delegation_path": ["a", "b\\"],
              "derived_tags": ("t",), "risk_tags": ("x", "y"), "labels": {"k": "v", "a": "é"},
              "latency_us": 3}
    rec = {**fields, "event_id": "E", "seq": 1, "time": "T", "kind": "decision",
           "writer": "w\"", "prev_hash": ""}
    first = seal_decision(fields, "E", 1, "T", quote("w\""), "", None)
    again = seal_decision(dict(fields), "E", 1, "T", quote("w\""), "", None)
    assert first == again == seal(rec, None)
    missing = {k: v for k, v in fields.items() if k != "topic"}
    assert seal_decision({**missing, "extra": "x"}, "E", 1, "T", '"w"', "", None) is None


def test_decision_template_declines_values_it_does_not_write() -> None:
    base = {"request_id": "r", "run_id": "", "tenant": "acme", "topic": "job.1.x",
            "outcome": "allow", "rule_id": "a", "reason": "ok", "policy_version": "v",
            "decision_id": "d", "approval_id": "", "delegation_path": ("a",),
            "derived_tags": (), "risk_tags": (), "labels": {}, "latency_us": 3}
    assert seal_decision(base, "e", 1, "t", '"w"', "", None) is not None
    for field, odd in [("latency_us", True), ("latency_us", 1.5), ("labels", None),
                       ("delegation_path", "a"), ("risk_tags", ("x", 1)), ("reason", None),
                       ("labels", {"k": 1})]:
        assert seal_decision({**base, field: odd}, "e", 1, "t", '"w"', "", None) is None, field


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
