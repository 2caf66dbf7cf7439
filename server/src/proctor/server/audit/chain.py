"""Sealing: one writer's hash chain, extended by a run of queued events.

The pipeline (pipeline.py) owns the chain head (seq, prev_hash) on the event loop
and hands runs of queued items here: `seal_items` gives back the stored lines and
the new head. Each event is serialized once. Decisions, nearly all of the audit,
go through the C template in runs (`event.seal_decisions`, one call a run);
anything else, and everything when an HMAC key is set or the extension is not
built, through `seal_items_py`, the reference.

An item is (kind, fields, time, future): kind FLUSH marks a flush request and
seals to nothing.
"""

from __future__ import annotations

from typing import Any

from . import event
from .event import decision_sized, format_micros, plain, seal, seal_decision
from .sink import Sealed

FLUSH = "\x00flush"
Item = tuple[str, Any, float, Any]


def seal_items(
    items: list[Item], seq: int, prev: str, writer: str, writer_json: str,
    key: bytes | None, ids: Any,
) -> tuple[list[Sealed], int, str]:
    """Chain and serialize items after (seq, prev): the sealed lines and the new head."""
    seal_decisions = event.seal_decisions
    if key is not None or seal_decisions is None:
        return seal_items_py(items, seq, prev, writer, writer_json, key, ids)
    # Runs of decision events are sealed in C, one call a run (what the loop below
    # does, without its per-event bookkeeping); the event a run stops at (another
    # kind, a flush marker, a decision the template declines) and any other kinds
    # after it go through the loop.
    batch: list[Sealed] = []
    i, n = 0, len(items)
    while True:
        taken, seq, prev = seal_decisions(
            items, i, seq, prev, writer, writer_json, ids, Sealed, batch)
        i += taken
        if i >= n:
            return batch, seq, prev
        j = i + 1
        while j < n and items[j][0] != "decision":
            j += 1
        sealed, seq, prev = seal_items_py(items[i:j], seq, prev, writer, writer_json, key, ids)
        batch += sealed
        i = j


def seal_items_py(
    items: list[Item], seq: int, prev: str, writer: str, writer_json: str,
    key: bytes | None, ids: Any,
) -> tuple[list[Sealed], int, str]:
    """seal_items() in Python: the reference, and what serves without the extension."""
    # The template writes prev_hash as it is: true of this writer's digests, checked
    # because a head resumed from a sink may hold anything.
    plain_prev = plain(prev)
    make = tuple.__new__
    batch: list[Sealed] = []
    for kind, fields, when, _ in items:
        if kind == FLUSH:
            continue
        seq += 1
        micros = round(when * 1_000_000)
        event_id = ids.new(micros // 1000)
        stamp = format_micros(micros)
        sealed = None
        if kind == "decision" and plain_prev and decision_sized(fields):
            # The common event, written by a template (same bytes as the generic path).
            sealed = seal_decision(fields, event_id, seq, stamp, writer_json, prev, key)
        if sealed is None:
            rec = dict(fields)
            rec.pop("hash", None)
            rec.pop("hmac", None)
            rec["event_id"] = event_id
            rec["seq"] = seq
            rec["time"] = stamp
            rec["kind"] = kind
            rec["writer"] = writer
            rec["prev_hash"] = prev
            sealed = seal(rec, key)
        line, prev = sealed
        plain_prev = True  # a digest from here on
        batch.append(make(Sealed, (writer, seq, line)))
    return batch, seq, prev
