"""The audit envelope: canonical JSON, the per-writer hash chain, HMAC, event ids.

A stored event is one JSON object per line. Its `hash` is the SHA-256 (hex) of
the canonical JSON of the record without the `hash` and `hmac` keys (so
`prev_hash` is covered); `hmac` is HMAC-SHA256 (hex) over the same bytes with
the key of `--audit-hmac-key-file`. Canonical JSON: sorted keys, separators
(",", ":"), ensure_ascii=False, UTF-8. The stored line itself is the canonical
bytes with `hash`/`hmac` appended before the closing brace, so each event is
serialized exactly once; anyone re-verifying drops those two keys and
re-canonicalizes.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import json
import json.encoder
import os
import re
import socket
import time
from datetime import UTC, datetime
from typing import Any

KINDS = ("decision", "budget", "approval", "policy_reload", "gap")
GENESIS = ""  # prev_hash of a writer's first event
HASH_FIELDS = ("hash", "hmac")
ENVELOPE_FIELDS = ("event_id", "seq", "time", "kind", "writer", "prev_hash")

def canonical(record: dict[str, Any]) -> bytes:
    """The bytes the hash covers: sorted keys, no spaces, UTF-8, non-ASCII kept."""
    return _ENCODER.encode(record).encode("utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# One encoder for every event: json.dumps with these options builds a new one per call.
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable
)


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 hex over the canonical JSON of `record` minus `hash` and `hmac`."""
    return hashlib.sha256(canonical(strip_hashes(record))).hexdigest()


def record_hmac(record: dict[str, Any], key: bytes) -> str:
    return _hmac.new(key, canonical(strip_hashes(record)), hashlib.sha256).hexdigest()


def strip_hashes(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in HASH_FIELDS}


def seal(record: dict[str, Any], key: bytes | None) -> tuple[bytes, str]:
    """Serialize once: return (the stored line with trailing newline, its hash).

    `record` must already hold `prev_hash` and no `hash`/`hmac`.
    """
    body = canonical(record)
    digest = hashlib.sha256(body).hexdigest()
    tail = ',"hash":"' + digest
    if key is not None:
        tail += '","hmac":"' + _hmac.new(key, body, hashlib.sha256).hexdigest()
    return body[:-1] + tail.encode("ascii") + b'"}\n', digest


# The fields Proctor's Decisions service records for a decision (the pipeline adds
# ENVELOPE_FIELDS). Such an event is written by a template instead of the generic
# encoder: same bytes (a property test holds the two together), a third of the time.
DECISION_FIELDS = frozenset((
    "request_id", "run_id", "tenant", "delegation_path", "topic", "risk_tags", "labels",
    "derived_tags", "outcome", "rule_id", "reason", "policy_version", "decision_id",
    "approval_id", "latency_us",
))
# The template below writes the keys in this order: canonical (sorted) order.
_DECISION_ORDER = (
    "approval_id", "decision_id", "delegation_path", "derived_tags", "event_id", "kind",
    "labels", "latency_us", "outcome", "policy_version", "prev_hash", "reason", "request_id",
    "risk_tags", "rule_id", "run_id", "seq", "tenant", "time", "topic", "writer",
)
assert list(_DECISION_ORDER) == sorted(DECISION_FIELDS | set(ENVELOPE_FIELDS))
_quote = json.encoder.encode_basestring  # the C one where built, as the encoder uses
_SEQUENCES = (tuple, list)


def seal_decision(
    f: dict[str, Any], event_id: str, seq: int, stamp: str, writer: str, prev: str,
    key: bytes | None,
) -> tuple[bytes, str] | None:
    """seal() for a decision event holding exactly DECISION_FIELDS, or None.

    None when a value is not of the type the template writes (a str where a list
    belongs, a bool or float latency, non-string tags...): the caller falls back to
    the generic encoder, which writes whatever it is given.
    """
    q = _quote
    path, derived, tags, labels, latency = (
        f["delegation_path"], f["derived_tags"], f["risk_tags"], f["labels"], f["latency_us"])
    if (type(latency) is not int or type(labels) is not dict or type(path) not in _SEQUENCES
            or type(derived) not in _SEQUENCES or type(tags) not in _SEQUENCES):
        return None
    try:
        label_text = ",".join([q(k) + ":" + q(v) for k, v in sorted(labels.items())])
        text = (
            f'{{"approval_id":{q(f["approval_id"])},"decision_id":{q(f["decision_id"])},'
            f'"delegation_path":[{",".join(map(q, path))}],'
            f'"derived_tags":[{",".join(map(q, derived))}],"event_id":{q(event_id)},'
            f'"kind":"decision","labels":{{{label_text}}},"latency_us":{latency},'
            f'"outcome":{q(f["outcome"])},"policy_version":{q(f["policy_version"])},'
            f'"prev_hash":{q(prev)},"reason":{q(f["reason"])},'
            f'"request_id":{q(f["request_id"])},"risk_tags":[{",".join(map(q, tags))}],'
            f'"rule_id":{q(f["rule_id"])},"run_id":{q(f["run_id"])},"seq":{seq},'
            f'"tenant":{q(f["tenant"])},"time":{q(stamp)},"topic":{q(f["topic"])},'
            f'"writer":{q(writer)}}}'
        )
    except TypeError:  # a value (or label) that is not a str
        return None
    body = text.encode("utf-8")
    digest = hashlib.sha256(body).hexdigest()
    tail = ',"hash":"' + digest
    if key is not None:
        tail += '","hmac":"' + _hmac.new(key, body, hashlib.sha256).hexdigest()
    return body[:-1] + tail.encode("ascii") + b'"}\n', digest


_second_cache: list[tuple[int, str]] = [(-1, "")]


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so strings sort as times."""
    micros = int(round(epoch * 1_000_000))
    sec, frac = divmod(micros, 1_000_000)
    cached_sec, prefix = _second_cache[0]
    if cached_sec != sec:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache[0] = (sec, prefix)
    return f"{prefix}.{frac:06d}Z"


def parse_time(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def default_writer_name() -> str:
    """hostname:pid:start-ms: a fresh chain for every process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(writer: str) -> str:
    """A writer name usable as a file-name prefix."""
    return _UNSAFE.sub("_", writer) or "writer"


def parse_line(line: bytes | str) -> dict[str, Any]:
    """Parse one stored event; raises ValueError on anything but a JSON object."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj
