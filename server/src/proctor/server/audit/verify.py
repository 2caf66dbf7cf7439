"""Checking the audit: every writer's chain, hashes, HMACs, seq continuity, gaps.

Events are grouped by their `writer` field (not by file name), so a directory of
segments, a consumer's output and a Redis stream are checked the same way.
Errors (exit 1): an unreadable line, a line whose bytes are not the canonical
form of its event (a duplicated key, say), a hash or HMAC that does not match, a
prev_hash that does not link, missing or duplicate seqs. In a directory each
writer's chain is also checked against its head checkpoint (head.py): a chain that
ends before its head (a cut tail, a deleted last segment), a head whose writer has
no events (its segments deleted), file-sink segments without a head, a chain that
starts after seq 1, and a head that is unreadable or fails its HMAC are errors.
Reported but not errors: `gap` events (shed under load, with their count), a torn
last line after the head (a write cut by a crash, never acknowledged), and, in a
Redis stream or a consumer's output, a chain that starts after seq 1 (older events
trimmed by MAXLEN).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .event import GENESIS, canonical, parse_line, safe_name, strip_hashes
from .file_sink import SEGMENT_RE
from .head import HEAD_SUFFIX, Head, read_heads
from .redis_sink import EVENT_FIELD, StreamRows, connect

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
            # connect() keeps replies as bytes (no decode_responses); redis-py types them loosely.
            rows = cast(StreamRows, r.xrange(stream, min=last, max="+", count=chunk))
            for sid, fields in rows:
                line = fields.get(EVENT_FIELD.encode(), b"")
                yield f"{stream}@{sid.decode()}", line + b"\n", False
            if len(rows) < chunk:
                return
            last = "(" + rows[-1][0].decode()
    finally:
        r.close()


def verify(
    lines: Iterator[tuple[str, bytes, bool]], hmac_key: bytes | None = None,
    heads: list[Head] | None = None,
) -> Report:
    """Check every line; with `heads` (a directory's head checkpoints) also each chain's
    end against its writer's head."""
    rep = Report()
    # writer -> list of (seq, prev_hash, hash, loc)
    chains: dict[str, list[tuple[int, str, str, str]]] = {}
    torn: list[str] = []
    unsigned = 0
    for loc, line, last in lines:
        if not line.endswith(b"\n"):
            if last:
                torn.append(loc)
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
        mac = ev.get("hmac")
        if line != _stored_form(body, stored, mac):
            rep.errors.append(
                f"{loc}: writer {writer} seq {seq}: the line is not the canonical form of its "
                "event (a duplicated key, reordered keys or added spaces: the line was edited)"
            )
        if hmac_key is not None:
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
    headed = {h.writer: h for h in heads or []}
    for writer, chain in chains.items():
        _check_chain(writer, chain, rep, strict_start=writer in headed)
    if heads is not None:
        check_heads(chains, headed, torn, rep)
    else:
        rep.warnings += [_torn(loc) for loc in torn]
    if unsigned:
        rep.notes.append(f"{unsigned} events carry an hmac that was not checked (no key given)")
    return rep


def _stored_form(body: bytes, digest: str, mac: Any) -> bytes:
    """The line the writer stores for canonical `body` (event.seal's layout)."""
    tail = f',"hash":"{digest}'
    if mac is not None:
        tail += f'","hmac":"{mac}'
    return body[:-1] + tail.encode("utf-8") + b'"}\n'


def _torn(loc: str) -> str:
    return f"{loc}: torn final line (a write cut short by a crash, never acknowledged)"


def _check_chain(
    writer: str, chain: list[tuple[int, str, str, str]], rep: Report, strict_start: bool = False,
) -> None:
    if any(chain[i][0] > chain[i + 1][0] for i in range(len(chain) - 1)):
        chain.sort(key=lambda c: c[0])
    first_seq, first_prev, _, first_loc = chain[0]
    if first_seq == 1 and first_prev != GENESIS:
        rep.errors.append(f"{first_loc}: writer {writer} seq 1: first event with a prev_hash")
    elif first_seq > 1 and strict_start:
        rep.errors.append(
            f"{first_loc}: writer {writer}: chain starts at seq {first_seq}; the segments "
            f"holding seq 1..{first_seq - 1} are missing (deleted)"
        )
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


def check_heads(
    chains: dict[str, list[tuple[int, str, str, str]]], heads: dict[str, Head],
    torn: list[str], rep: Report,
) -> None:
    """Each writer's chain (sorted by _check_chain) against its head checkpoint: the
    chain must reach the head's seq with the head's hash; a writer with file-sink
    segments must have a head; a head must have its writer's events."""
    for writer, chain in chains.items():
        head = heads.get(writer)
        last_seq, _, _, last_loc = chain[-1]
        if head is None:
            if any(_is_segment(loc) for _, _, _, loc in chain):
                rep.errors.append(
                    f"writer {writer}: no head checkpoint ({safe_name(writer)}{HEAD_SUFFIX} "
                    "missing: deleted, or the segments predate head checkpoints), so a cut "
                    f"tail cannot be ruled out; its events end at seq {last_seq} ({last_loc})"
                )
            continue
        if last_seq < head.seq:
            rep.missing += head.seq - last_seq
            rep.errors.append(
                f"writer {writer}: events end at seq {last_seq} ({last_loc}) but the head "
                f"checkpoint {head.path} says seq {head.seq} was stored"
                f"{_in_segment(head)}: the tail was cut ({head.seq - last_seq} events missing)"
            )
            continue
        at = {seq: (digest, loc) for seq, _, digest, loc in chain}.get(head.seq)
        if at is not None and at[0] != head.hash:
            rep.errors.append(
                f"{at[1]}: writer {writer} seq {head.seq}: hash differs from the head checkpoint "
                f"{head.path} (the chain's end was replaced)"
            )
    for writer, head in heads.items():
        if writer not in chains and head.seq > 0:
            rep.missing += head.seq
            rep.errors.append(
                f"writer {writer}: no events, but the head checkpoint {head.path} says seq "
                f"{head.seq} was stored{_in_segment(head)}: the writer's segments were deleted"
            )
    for loc in torn:
        name = Path(loc.rsplit(":", 1)[0]).name
        m = SEGMENT_RE.match(name)
        if m is not None and not any(safe_name(w) == m["prefix"] for w in heads):
            rep.errors.append(f"{_torn(loc)}, and its writer has no head checkpoint")
        else:
            rep.warnings.append(_torn(loc))


def _is_segment(loc: str) -> bool:
    return SEGMENT_RE.match(Path(loc.rsplit(":", 1)[0]).name) is not None


def _in_segment(head: Head) -> str:
    if not head.segment:
        return ""
    gone = "" if (head.path.parent / head.segment).exists() else ", now missing"
    return f" (in {head.segment}{gone})"


def verify_dir(root: str | os.PathLike[str], hmac_key: bytes | None = None) -> Report:
    """Every writer's segments under root, each chain checked against its head checkpoint."""
    base = Path(root)
    if not base.is_dir():
        rep = Report()
        rep.errors.append(f"{root}: no such directory")
        return rep
    heads, head_errors = read_heads(base, hmac_key)
    by_writer: dict[str, Head] = {}
    for head in heads:
        if head.writer in by_writer:
            head_errors.append(f"{head.path}: a second head checkpoint for writer {head.writer}")
        by_writer[head.writer] = head
    rep = verify(dir_lines(base), hmac_key, list(by_writer.values()))
    rep.errors[:0] = head_errors
    if hmac_key is None and any(h.hmac for h in heads):
        rep.notes.append("head checkpoints carry an hmac that was not checked (no key given)")
    return rep


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
