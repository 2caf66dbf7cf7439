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
