"""Audit: hash-chained event stream, sinks, consumers.

`build_audit(settings)` turns the serve settings into the `AuditLog` (log.py) the
request path records into (`offer()`, else `await record()`): an `AuditWriter`
(writer.py) in front of the file or Redis sink.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..turns import Turns
from .log import AuditClosed, AuditLog, AuditUnavailable, NullAudit
from .writer import AuditWriter

__all__ = ["AuditClosed", "AuditLog", "AuditUnavailable", "AuditWriter", "NullAudit",
           "audit_settings", "build_audit"]

_DEFAULTS: dict[str, Any] = {
    "audit": "file",
    "audit_dir": "./proctor-audit",
    "audit_stream": "proctor:audit",
    "audit_maxlen": 1_000_000,
    "audit_durability": "async",
    "audit_queue_policy": "block",
    "audit_queue_size": 65536,
    "audit_segment_bytes": 64 * 1024 * 1024,
    "audit_hmac_key_file": None,
    "redis_url": None,
}


def audit_settings(settings: Any) -> dict[str, Any]:
    """The audit knobs of a Settings object, with defaults for any it does not carry."""
    out = {}
    for name, default in _DEFAULTS.items():
        value = getattr(settings, name, None)
        out[name] = default if value is None else value
    if out["audit_hmac_key_file"] in ("", None):
        out["audit_hmac_key_file"] = None
    return out


def build_audit(settings: Any, writer_name: str | None = None, *, redis: Any = None,
                on_health: Callable[[bool], None] | None = None,
                turns: Turns | None = None) -> AuditWriter:
    """The AuditLog of `proctor serve`: `--audit file|redis`, one writer per process.

    `writer_name` should be unique per process start (hostname:pid:start-ms is the
    default); reusing a name continues that writer's chain from what the sink holds.
    `redis`: the process's RedisLayer, which the Redis sink shares (else it opens its
    own from --redis-url). `on_health(serving)`: told when the sink stops and starts
    writing again.
    """
    from .event import default_writer_name
    from .verify import read_key

    cfg = audit_settings(settings)
    kind = str(cfg["audit"]).lower()
    writer = writer_name or default_writer_name()
    key = read_key(cfg["audit_hmac_key_file"]) if cfg["audit_hmac_key_file"] else None
    audit_dir = os.fspath(cfg["audit_dir"])
    sink: Any
    if kind == "file":
        from .file_sink import FileSink

        sink = FileSink(audit_dir, segment_bytes=int(cfg["audit_segment_bytes"]), hmac_key=key)
    elif kind == "redis":
        from .redis_sink import RedisSink

        if redis is None and not cfg["redis_url"]:
            raise ValueError("--audit redis needs --redis-url")
        sink = RedisSink(
            redis if redis is not None else cfg["redis_url"], cfg["audit_stream"],
            os.path.join(audit_dir, "spool"), maxlen=int(cfg["audit_maxlen"]),
        )
    else:
        raise ValueError(f"unknown audit sink {kind!r}: use file or redis")
    return AuditWriter(
        sink,
        writer=writer,
        hmac_key=key,
        queue_size=int(cfg["audit_queue_size"]),
        full_policy=str(cfg["audit_queue_policy"]),
        durability=str(cfg["audit_durability"]),
        on_health=on_health,
        turns=turns,
    )
