"""Structured JSON logs on stderr: one object per line.

Every line carries ts (RFC 3339, UTC), level, logger, msg, pid and the worker
index; structured fields go in `extra={"fields": {...}}` and land at the top
level of the object.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = frozenset(("ts", "level", "logger", "msg", "pid", "worker"))
_worker_index: int | None = None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": os.getpid(),
        }
        if _worker_index is not None:
            out["worker"] = _worker_index
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                out[key if key not in _RESERVED else f"field_{key}"] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def configure(level: str = "info", worker: int | None = None) -> None:
    """Send every logger's records to stderr as JSON lines at `level`."""
    global _worker_index
    _worker_index = worker
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log `msg` with structured `fields`."""
    if logger.isEnabledFor(level):
        logger.log(level, msg, extra={"fields": fields})
