"""One writer's hash chain: seq and prev_hash, extended one event at a time.

`Chain.seal` gives each event its envelope (event id, seq, time, kind, writer,
prev_hash), serializes it once (event.py's canonical encoder), adds its hash (and
HMAC) and moves the head.
"""

from __future__ import annotations

import logging
from typing import Any

from ..ids import new_generator
from .event import GENESIS, format_micros, seal
from .sink import Sealed

log = logging.getLogger("proctor.audit")


class Chain:
    """The head of one writer's chain: the last seq and hash sealed."""

    def __init__(self, writer: str, key: bytes | None = None,
                 head: tuple[int, str] | None = None) -> None:
        self.writer = writer
        self.key = key
        self.seq, self.prev = head if head is not None else (0, GENESIS)
        self._ids = new_generator()

    def seal(self, kind: str, fields: dict[str, Any], when: float) -> Sealed:
        """The next event of the chain, stored as one line."""
        seq = self.seq + 1
        micros = round(when * 1_000_000)
        event_id = self._ids.new(micros // 1000)
        stamp = format_micros(micros)
        if "hash" in fields or "hmac" in fields:
            fields = {k: v for k, v in fields.items() if k not in ("hash", "hmac")}
        try:
            line, digest = seal({**fields, "event_id": event_id, "seq": seq, "time": stamp,
                                 "kind": kind, "writer": self.writer, "prev_hash": self.prev},
                                self.key)
        except (TypeError, ValueError) as e:  # a lone surrogate, a value JSON cannot hold
            log.error("audit event %s #%d could not be serialized (%s): recorded as an error",
                      kind, seq, e)
            line, digest = seal({**_unwritable(fields, e), "event_id": event_id, "seq": seq,
                                 "time": stamp, "kind": kind, "writer": self.writer,
                                 "prev_hash": self.prev}, self.key)
        self.seq, self.prev = seq, digest
        return Sealed(self.writer, seq, line)


def _unwritable(fields: dict[str, Any], error: Exception) -> dict[str, Any]:
    """What is recorded instead of an event that cannot be serialized: its ids (as text
    that can be written) and the error, so the chain still shows it happened."""
    out: dict[str, Any] = {"error": f"event could not be serialized: {error}"}
    for name in ("request_id", "decision_id", "tenant", "outcome"):
        value = fields.get(name)
        if isinstance(value, str):
            out[name] = value.encode("utf-8", "replace").decode("utf-8")
    return out
