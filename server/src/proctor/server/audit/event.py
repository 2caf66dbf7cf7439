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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

KINDS = ("decision", "budget", "approval", "policy_reload", "gap")
GENESIS = ""  # prev_hash of a writer's first event
HASH_FIELDS = ("hash", "hmac")
ENVELOPE_FIELDS = ("event_id", "seq", "time", "kind", "writer", "prev_hash")

def canonical(record: dict[str, Any]) -> bytes:
    """The bytes the hash covers: sorted keys, no spaces, UTF-8, non-ASCII kept.

    The definition is the standard library's encoder below (`_stdlib_canonical`).
    orjson writes the same bytes about five times faster for a record of plain JSON
    types (str, int, bool, None, and lists, tuples and dicts of them), which is what
    nearly every event is; it formats floats differently and serializes types the
    standard library hands to `_jsonable`, so a record holding anything else, or
    one orjson refuses (an int past 64 bits, a non-str key, a lone surrogate, deep
    nesting), takes the standard library's path and its bytes or its error.
    """
    try:
        if _plain(record):
            return _orjson_dumps(record, option=_SORT_KEYS)
    except (TypeError, RecursionError):  # orjson refused, or too deep: the standard
        pass  # library decides (its bytes, or its error)
    return _stdlib_canonical(record)


def _stdlib_canonical(record: dict[str, Any]) -> bytes:
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
_orjson_dumps = orjson.dumps
_SORT_KEYS = orjson.OPT_SORT_KEYS


def _plain(obj: dict[str, Any]) -> bool:
    """True when `obj` holds only str, int, bool, None and lists, tuples, dicts of them
    (exact types: a subclass may be written otherwise)."""
    return _plain_items(obj.values())


def _plain_items(items: Iterable[Any]) -> bool:
    for value in items:
        kind = type(value)
        if kind is str or kind is int:
            continue
        if kind is dict:
            if not _plain_items(value.values()):
                return False
        elif kind is tuple or kind is list:
            if not _plain_items(value):
                return False
        elif kind is not bool and value is not None:
            return False
    return True


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
