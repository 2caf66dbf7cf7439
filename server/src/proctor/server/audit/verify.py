"""Checking the audit: every writer's chain, hashes, HMACs, seq continuity, gaps.

Events are grouped by their `writer` field (not by file name), so a directory of
segments, a consumer's output and a Redis stream are checked the same way.
Errors (exit 1): an unreadable line, a hash or HMAC that does not match, a
prev_hash that does not link, missing or duplicate seqs. Reported but not
errors: `gap` events (shed under load, with their count), a torn last line
(a write cut by a crash, never acknowledged), and a chain that starts after
seq 1 (older events trimmed by MAXLEN or removed by retention).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .event import GENESIS, canonical, parse_line, strip_hashes
from .redis_sink import EVENT_FIELD, connect

_MAX_ERRORS_SHOWN = 50


@dataclass
class Report:
    events: int = 0
    writers: int = 0
    gap_events: int = 0
    shed: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        lines = [f"ERROR {e}" for e in self.errors[:_MAX_ERRORS_SHOWN]]
        if len(self.errors) > _MAX_ERRORS_SHOWN:
            lines.append(f"... {len(self.errors) - _MAX_ERRORS_SHOWN} more errors")
        lines += [f"WARNING {w}" for w in self.warnings]
        lines += [f"NOTE {n}" for n in self.notes]
        status = "OK" if self.ok else "BROKEN"
        lines.append(
            f"{status}: {self.events} events, {self.writers} writers, {self.gap_events} gap events "
            f"({self.shed} shed), {self.missing} missing seqs, {len(self.errors)} errors"
        )
        return "\n".join(lines)


def dir_lines(root: str | os.PathLike[str]) -> Iterator[tuple[str, bytes, bool]]:
    """(location, line, is_last_line_of_file) for every *.jsonl under root (spool excluded)."""
    base = Path(root)
    for path in sorted(base.glob("*.jsonl")):
        with open(path, "rb") as f:
            prev: tuple[str, bytes] | None = None
            for n, line in enumerate(f, 1):
                if prev is not None:
                    yield prev[0], prev[1], False
                prev = (f"{path}:{n}", line)
            if prev is not None:
                yield prev[0], prev[1], True


def stream_lines(url: str, stream: str, chunk: int = 5000) -> Iterator[tuple[str, bytes, bool]]:
    r = connect(url, timeout=10.0)
    try:
        last = "-"
        while True:
            rows = r.xrange(stream, min=last, max="+", count=chunk)
            for sid, fields in rows:
                line = fields.get(EVENT_FIELD.encode(), b"")
                yield f"{stream}@{sid.decode()}", line + b"\n", False
            if len(rows) < chunk:
                return
            last = "(" + rows[-1][0].decode()
    finally:
        r.close()


def verify(lines: Iterator[tuple[str, bytes, bool]], hmac_key: bytes | None = None) -> Report:
    rep = Report()
    # writer -> list of (seq, prev_hash, hash, loc)
    chains: dict[str, list[tuple[int, str, str, str]]] = {}
    unsigned = 0
    for loc, line, last in lines:
        if not line.endswith(b"\n"):
            if last:
                rep.warnings.append(f"{loc}: torn final line (write cut short, never acknowledged)")
            else:
                rep.errors.append(f"{loc}: line without newline")
            continue
        if not line.strip():
            rep.errors.append(f"{loc}: empty line")
            continue
        try:
            ev = parse_line(line)
        except ValueError as exc:
            rep.errors.append(f"{loc}: unreadable event ({exc})")
            continue
        rep.events += 1
        writer, seq, stored = ev.get("writer"), ev.get("seq"), ev.get("hash")
        if not isinstance(writer, str) or not isinstance(seq, int) or not isinstance(stored, str):
            rep.errors.append(f"{loc}: missing writer, seq or hash")
            continue
        body = canonical(strip_hashes(ev))
        if hashlib.sha256(body).hexdigest() != stored:
            rep.errors.append(f"{loc}: writer {writer} seq {seq}: hash mismatch (event altered)")
        if hmac_key is not None:
            mac = ev.get("hmac")
            want = _hmac.new(hmac_key, body, hashlib.sha256).hexdigest()
            if not isinstance(mac, str):
                rep.errors.append(f"{loc}: writer {writer} seq {seq}: no hmac")
            elif not _hmac.compare_digest(mac, want):
                rep.errors.append(f"{loc}: writer {writer} seq {seq}: hmac mismatch")
        elif "hmac" in ev:
            unsigned += 1
        if ev.get("kind") == "gap":
            rep.gap_events += 1
            count = ev.get("count", 0)
            rep.shed += count if isinstance(count, int) else 0
            rep.warnings.append(f"{loc}: writer {writer} seq {seq}: gap event, {count} events shed")
        chains.setdefault(writer, []).append((seq, str(ev.get("prev_hash", "")), stored, loc))
    rep.writers = len(chains)
    for writer, chain in chains.items():
        _check_chain(writer, chain, rep)
    if unsigned:
        rep.notes.append(f"{unsigned} events carry an hmac that was not checked (no key given)")
    return rep


def _check_chain(writer: str, chain: list[tuple[int, str, str, str]], rep: Report) -> None:
    if any(chain[i][0] > chain[i + 1][0] for i in range(len(chain) - 1)):
        chain.sort(key=lambda c: c[0])
    first_seq, first_prev, _, first_loc = chain[0]
    if first_seq == 1 and first_prev != GENESIS:
        rep.errors.append(f"{first_loc}: writer {writer} seq 1: first event with a prev_hash")
    elif first_seq > 1:
        rep.notes.append(
            f"writer {writer}: chain starts at seq {first_seq} ({first_loc}); "
            "earlier events trimmed or removed"
        )
    for prev, cur in zip(chain, chain[1:], strict=False):
        pseq, _, phash, _ = prev
        seq, prev_hash, _, loc = cur
        if seq == pseq:
            rep.errors.append(f"{loc}: writer {writer} seq {seq}: duplicate seq (also {prev[3]})")
            continue
        if seq != pseq + 1:
            n = seq - pseq - 1
            rep.missing += n
            missing = f"{pseq + 1}" if n == 1 else f"{pseq + 1}..{seq - 1}"
            rep.errors.append(
                f"{loc}: writer {writer}: gap, seq {missing} missing ({n} events) before seq {seq}"
            )
            continue
        if prev_hash != phash:
            rep.errors.append(
                f"{loc}: writer {writer} seq {seq}: prev_hash does not match the hash of seq {pseq}"
            )


def verify_dir(root: str | os.PathLike[str], hmac_key: bytes | None = None) -> Report:
    if not Path(root).is_dir():
        rep = Report()
        rep.errors.append(f"{root}: no such directory")
        return rep
    return verify(dir_lines(root), hmac_key)


def verify_stream(url: str, stream: str, hmac_key: bytes | None = None) -> Report:
    return verify(stream_lines(url, stream), hmac_key)


def read_key(path: str | os.PathLike[str]) -> bytes:
    """An HMAC key file: its bytes, trailing newline stripped; empty is an error."""
    key = Path(path).read_bytes().rstrip(b"\r\n")
    if not key:
        raise ValueError(f"{path}: empty HMAC key file")
    return key


def summary(rep: Report) -> dict[str, Any]:
    return {
        "ok": rep.ok, "events": rep.events, "writers": rep.writers, "gap_events": rep.gap_events,
        "shed": rep.shed, "missing": rep.missing, "errors": rep.errors, "warnings": rep.warnings,
        "notes": rep.notes,
    }
