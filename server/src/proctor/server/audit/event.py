"""The audit envelope: canonical JSON, the per-writer hash chain, HMAC, event ids.

A stored event is one JSON object per line. Its `hash` is the SHA-256 (hex) of
the canonical JSON of the record without the `hash` and `hmac` keys (so
`prev_hash` is covered); `hmac` is HMAC-SHA256 (hex) over the same bytes with
the key of `--audit-hmac-key-file`. Canonical JSON: sorted keys, separators
(",", ":"), ensure_ascii=False, UTF-8. The stored line itself is the canonical
bytes with `hash`/`hmac` appended before the closing brace, so each event is
serialized exactly once; anyone re-verifying drops those two keys and
re-canonicalizes.

Decision events, nearly all of the audit, are written by a template rather than the
generic encoder: `decision_body()` (a test holds it to the generic encoder byte for
byte).
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
    if _encode_chunks is None:
        return _ENCODER.encode(record).encode("utf-8")
    return "".join(_encode_chunks(record, 0)).encode("utf-8")


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
# The same encoder's C core, made once: JSONEncoder.encode() makes a new one per call,
# with a dict of containers seen for cycle detection (events are plain trees). Same bytes.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_chunks = None if _c_make_encoder is None else _c_make_encoder(
    None, _jsonable, json.encoder.encode_basestring, None, ":", ",", True, False, True)


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
    return _with_hashes(canonical(record), key)


def _with_hashes(body: bytes, key: bytes | None) -> tuple[bytes, str]:
    """The stored line of canonical `body`: its hash (and HMAC) added before the brace."""
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
# Keys the approval gate may add to a decision event (server/approvals/gate.py): the
# template writes them too, where canonical order puts them (approval_error before
# approval_id, the others between approval_id and decision_id).
APPROVAL_FIELDS = ("approval_error", "approval_presented", "approval_retry", "approval_use")
_N_DECISION = len(DECISION_FIELDS)


def decision_sized(f: dict[str, Any]) -> bool:
    """True when `f` has as many keys as DECISION_FIELDS plus the APPROVAL_FIELDS it holds:
    with every decision field present (the template checks), nothing else."""
    n = len(f)
    if n == _N_DECISION:
        return True
    return n == _N_DECISION + sum(1 for k in APPROVAL_FIELDS if k in f)


# The template below writes the keys in this order: canonical (sorted) order.
_DECISION_ORDER = (
    "approval_id", "decision_id", "delegation_path", "derived_tags", "event_id", "kind",
    "labels", "latency_us", "outcome", "policy_version", "prev_hash", "reason", "request_id",
    "risk_tags", "rule_id", "run_id", "seq", "tenant", "time", "topic", "writer",
)
assert list(_DECISION_ORDER) == sorted(DECISION_FIELDS | set(ENVELOPE_FIELDS))
_quote = json.encoder.encode_basestring  # the C one where built, as the encoder uses
_SEQUENCES = (tuple, list)
# Escaped JSON of strings and string sequences that recur from event to event: the
# policy's outcome, rule id, reason and version (the same objects every time, so a
# lookup is a pointer compare) and delegation paths and tag lists. Cleared when
# full rather than evicted one by one: a miss costs one escape. Arrays have a dict
# of their own: in one shared dict a tuple given where a str belongs would be
# written from the cache if some path equalled it and declined otherwise, so the
# None cases would hang on what came before (and the C twin could not match them).
_ESCAPED: dict[str, str] = {}
_ESCAPED_ARRAYS: dict[tuple[str, ...], str] = {}
_ESCAPED_MAX = 4096


def _escaped(value: str) -> str:
    if len(_ESCAPED) >= _ESCAPED_MAX:
        _ESCAPED.clear()
    text = _ESCAPED[value] = _quote(value)
    return text


def _escaped_array(items: tuple[str, ...] | list[str]) -> str:
    key = items if type(items) is tuple else tuple(items)
    text = _ESCAPED_ARRAYS.get(key)
    if text is None:
        if len(_ESCAPED_ARRAYS) >= _ESCAPED_MAX:
            _ESCAPED_ARRAYS.clear()
        text = _ESCAPED_ARRAYS[key] = "[" + ",".join(map(_quote, items)) + "]"
    return text


def quote(value: str) -> str:
    """`value` as a JSON string, escaped as the canonical encoder does."""
    return _quote(value)


def plain(value: str) -> bool:
    """True when JSON writes `value` between quotes as it is (nothing to escape)."""
    return _quote(value) == f'"{value}"'


def decision_body(
    f: dict[str, Any], event_id: str, seq: int, stamp: str, writer_json: str, prev: str,
) -> bytes | None:
    """The canonical JSON of a decision event (no hash yet), or None.

    The envelope comes ready: `event_id`, `stamp` and `prev` must be plain() (the
    pipeline's ULIDs, times and hex digests are) and `writer_json` is quote(writer).
    Of APPROVAL_FIELDS it writes those `f` holds; keys it does not know it ignores (the
    caller checks with decision_sized()).
    None when a value is not of the type the template writes (a str where a list
    belongs, a bool or float latency, non-string tags, a non-bool approval_retry...)
    or a field is missing: the
    caller falls back to the generic encoder, which writes whatever it is given.
    Raises UnicodeEncodeError for a str holding a lone surrogate, as canonical() does.
    """
    q = _quote
    try:
        path, derived, tags, labels, latency = (
            f["delegation_path"], f["derived_tags"], f["risk_tags"], f["labels"],
            f["latency_us"])
        if (type(latency) is not int or type(labels) is not dict
                or type(path) not in _SEQUENCES or type(derived) not in _SEQUENCES
                or type(tags) not in _SEQUENCES):
            return None
        if not labels:
            label_text = "{}"
        elif len(labels) == 1:
            [(k, v)] = labels.items()
            label_text = "{" + q(k) + ":" + q(v) + "}"
        else:
            pairs = [q(k) + ":" + q(v) for k, v in sorted(labels.items())]
            label_text = "{" + ",".join(pairs) + "}"
        outcome, rule_id, reason, version = (
            f["outcome"], f["rule_id"], f["reason"], f["policy_version"])
        before = between = ""
        if "approval_error" in f:
            before = f'"approval_error":{q(f["approval_error"])},'
        if "approval_presented" in f:
            between = f',"approval_presented":{q(f["approval_presented"])}'
        if "approval_retry" in f:
            retry = f["approval_retry"]
            if type(retry) is not bool:
                return None
            between += ',"approval_retry":true' if retry else ',"approval_retry":false'
        if "approval_use" in f:
            between += f',"approval_use":{q(f["approval_use"])}'
        known = _ESCAPED.get
        text = (
            f'{{{before}"approval_id":{q(f["approval_id"])}{between},'
            f'"decision_id":{q(f["decision_id"])},'
            f'"delegation_path":{_escaped_array(path) if path else "[]"},'
            f'"derived_tags":{_escaped_array(derived) if derived else "[]"},'
            f'"event_id":"{event_id}","kind":"decision","labels":{label_text},'
            f'"latency_us":{latency},"outcome":{known(outcome) or _escaped(outcome)},'
            f'"policy_version":{known(version) or _escaped(version)},"prev_hash":"{prev}",'
            f'"reason":{known(reason) or _escaped(reason)},'
            f'"request_id":{q(f["request_id"])},'
            f'"risk_tags":{_escaped_array(tags) if tags else "[]"},'
            f'"rule_id":{known(rule_id) or _escaped(rule_id)},"run_id":{q(f["run_id"])},'
            f'"seq":{seq},"tenant":{q(f["tenant"])},"time":"{stamp}",'
            f'"topic":{q(f["topic"])},"writer":{writer_json}}}'
        )
    except (TypeError, KeyError):  # a value (or label) that is not a str; a missing field
        return None
    return text.encode("utf-8")


def seal_decision(
    f: dict[str, Any], event_id: str, seq: int, stamp: str, writer_json: str, prev: str,
    key: bytes | None,
) -> tuple[bytes, str] | None:
    """seal() for a decision event holding DECISION_FIELDS (and any APPROVAL_FIELDS; see
    decision_sized() for the check that nothing else is there), or None.

    The arguments and the None cases are decision_body()'s.
    """
    body = decision_body(f, event_id, seq, stamp, writer_json, prev)
    return None if body is None else _with_hashes(body, key)


# The text of each second recently formatted. An event's own time and the times it
# carries (an approval's expiry, an hour on) alternate, and a single remembered
# second missed on nearly every call of such a mix. Threads may share it: a value
# is always its own key's text, and a lost insert is only a recomputation.
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 64


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with microseconds: fixed width, so strings sort as times."""
    return format_micros(round(epoch * 1_000_000))


def format_micros(micros: int) -> str:
    """format_time() of a time in integer microseconds since the epoch."""
    sec = micros // 1_000_000
    text = _SECONDS.get(sec)
    if text is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        text = _SECONDS[sec] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
    # 1_000_000 + frac has seven digits: its last six are frac zero-padded.
    return text + str(micros % 1_000_000 + 1_000_000)[1:] + "Z"


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
