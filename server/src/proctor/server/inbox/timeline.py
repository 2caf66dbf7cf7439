"""A run's timeline and one decision's envelope, read back from the audit.

Both scan the whole audit (every writer's segments, or the Redis stream) with
the audit reader, in a worker thread: the cost grows with the audit, which is
fine for a reviewer's click, not for a hot path. A run's timeline is every
decision event of that `run_id` in the audit's order (time, writer, seq),
each folded with its approval's steps into `proctor audit show`'s envelope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..audit.cli import envelope
from ..audit.reader import open_reader

_BATCH = 2000


@dataclass(frozen=True, slots=True)
class AuditSource:
    """Where this server's audit can be read back: a directory, or a Redis stream."""

    audit_dir: str = ""
    redis_url: str = ""
    stream: str = ""

    @classmethod
    def from_settings(cls, settings: Any) -> AuditSource:
        if getattr(settings, "audit", "file") == "redis":
            return cls(redis_url=settings.redis_url, stream=settings.audit_stream)
        return cls(audit_dir=settings.audit_dir)

    def events(self) -> Iterator[dict[str, Any]]:
        reader = open_reader(self.audit_dir or None, self.redis_url or None, self.stream or None)
        try:
            while True:
                items = reader.poll(_BATCH)
                if not items:
                    return
                for it in items:
                    reader.ack(it)
                    yield it.event
        finally:
            close = getattr(reader, "close", None)
            if close is not None:
                close()


def _fold(decisions: list[dict[str, Any]], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for d in decisions:
        did, aid = d.get("decision_id"), d.get("approval_id") or ""
        mine = [s for s in steps if s.get("decision_id") == did
                or (aid and s.get("approval_id") == aid)]
        env = envelope(d, mine)
        env["url"] = f"/decisions/{env['decision_id']}"
        out.append(env)
    return out


def run_timeline(source: AuditSource, run_id: str,
                 visible: Callable[[str], bool]) -> list[dict[str, Any]]:
    """The envelopes of every decision of `run_id` whose tenant passes `visible`, in order."""
    decisions: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    for ev in source.events():
        if ev.get("run_id") != run_id or not visible(str(ev.get("tenant", ""))):
            continue
        kind = ev.get("kind")
        if kind == "decision":
            decisions.append(ev)
        elif kind == "approval":
            steps.append(ev)
    return _fold(decisions, steps)


def decision_envelope(source: AuditSource, decision_id: str,
                      visible: Callable[[str], bool]) -> dict[str, Any] | None:
    """`proctor audit show`'s envelope of one decision, or None (unknown or not visible)."""
    found: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    for ev in source.events():
        kind = ev.get("kind")
        if kind == "decision" and ev.get("decision_id") == decision_id and found is None:
            found = ev
        elif kind == "approval":
            steps.append(ev)
    if found is None or not visible(str(found.get("tenant", ""))):
        return None
    return _fold([found], steps)[0]
