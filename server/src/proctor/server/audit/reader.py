"""Reading the whole audit back (every writer's segments, or the stream) with a resumable cursor.

Both readers have the same shape: `poll(limit)` returns what is available now
(possibly nothing), `ack(item)` marks an item as handed to the consumer (filtered
out or not), `cursor()` is the position after the last acked item.

Directory cursor (`f1.` + base64url JSON `{"t": T, "w": {writer: [seq, time]}}`):
resuming delivers an event when its writer is in `w` and its seq is above the
recorded one, or, for any other writer, when its time is at least `T`. The
backlog is merged across writers in (time, writer, seq) order, and `T` trails
the newest delivered time by GRACE_S, so `w` only names the writers active in
that window and the cursor stays small however many writers the directory has
seen. (An event that becomes visible more than GRACE_S after its own timestamp,
with its writer absent from `w`, could be skipped on resume; writers fsync every
batch within milliseconds.)

Stream cursor (`r1.<stream id>`): the last delivered entry id; XRANGE resumes
after it.

For the shared tail (stream.py's AuditTail) a reader can also say whether it has
read an item already (`has_read`, by its position in the files or the stream, so
the tail's copy of an event it has is skipped), start a copy of itself at its read
position (`fork`), and move its read position to just after what it has acked
(`resume`, when a follower that lagged the tail goes back to reading on its own).
"""

from __future__ import annotations

import base64
import heapq
import json
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from .event import format_time, parse_time, safe_name
from .file_sink import SEGMENT_RE, list_segments
from .redis_sink import EVENT_FIELD, StreamRows, connect

GRACE_S = 60.0
# Lines parsed per read: small, so one read in a worker thread holds the GIL (and so the
# event loop) for well under a millisecond.
_READ_LINES = 64


class Item(NamedTuple):
    event: dict[str, Any]
    line: bytes
    loc: str  # file:line or stream@id
    key: tuple[str, str, int]  # (time, writer, seq)
    stream_id: str = ""
    pos: tuple[str, str, int, int] | None = None  # files: (source, path, offset after, line)


class CursorError(ValueError):
    """A cursor that this reader cannot resume from."""


def _b64(obj: Any) -> str:
    raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _key(ev: dict[str, Any]) -> tuple[str, str, int]:
    seq = ev.get("seq")
    return (str(ev.get("time", "")), str(ev.get("writer", "")), seq if isinstance(seq, int) else 0)


@dataclass
class _Source:
    """One writer's segments (or one other JSONL file) read forward."""

    files: list[Path]
    prefix: str = ""
    index: int = 0
    offset: int = 0
    line_no: int = 0
    buf: deque[Item] = field(default_factory=deque)

    def fill(self, reader: DirReader) -> None:
        """Read complete lines into buf until it holds something or the data runs out."""
        while not self.buf and self.index < len(self.files):
            path = self.files[self.index]
            try:
                with open(path, "rb") as f:
                    f.seek(self.offset)
                    n = 0
                    for line in f:
                        if not line.endswith(b"\n"):
                            break
                        self.offset += len(line)
                        self.line_no += 1
                        n += 1
                        reader._take(self, line, path)
                        if n >= _READ_LINES:
                            break
                    at_end = n < _READ_LINES
            except FileNotFoundError:
                at_end = True
            if self.buf or not at_end:
                continue
            if self.index + 1 < len(self.files):
                self.index += 1
                self.offset = 0
                self.line_no = 0
            else:
                return


class DirReader:
    """Every writer's segments under one directory (plus any other *.jsonl there)."""

    def __init__(self, root: str | os.PathLike[str], cursor: str = "") -> None:
        self.root = Path(root)
        self._t0 = ""
        self._w0: dict[str, list[Any]] = {}
        if cursor:
            if not cursor.startswith("f1."):
                raise CursorError("not a directory audit cursor")
            try:
                obj = _unb64(cursor[3:])
                self._t0 = str(obj.get("t", ""))
                self._w0 = {str(k): list(v) for k, v in obj.get("w", {}).items()}
            except (ValueError, AttributeError, TypeError) as exc:
                raise CursorError(f"malformed cursor: {exc}") from None
        self._sources: dict[str, _Source] = {}
        self._delivered: dict[str, list[Any]] = {k: list(v) for k, v in self._w0.items()}
        self._high = self._t0
        self._acked_pos: dict[str, tuple[str, str, int, int]] = {}
        self._trail = ("", "")  # (high, the cursor's floor for it)
        self.skipped_lines = 0

    # ---- discovery ----------------------------------------------------------------------

    def _refresh(self) -> None:
        groups = list_segments(self.root)
        try:
            for name in os.listdir(self.root):
                if name.endswith(".jsonl") and not SEGMENT_RE.match(name):
                    groups["\x00" + name] = [self.root / name]
        except FileNotFoundError:
            pass
        for prefix, files in groups.items():
            src = self._sources.get(prefix)
            if src is None:
                self._sources[prefix] = self._start(prefix, files)
            else:
                src.files = files
                if src.index >= len(files):
                    src.index = max(0, len(files) - 1)

    def _start(self, prefix: str, files: list[Path]) -> _Source:
        """Skip whole segments that the cursor says were delivered already."""
        src = _Source(files, prefix)
        if not self._w0 and not self._t0:
            return src
        seqs = [v[0] for w, v in self._w0.items() if safe_name(w) == prefix]
        for i in range(len(files) - 1):
            nxt = SEGMENT_RE.match(files[i + 1].name)
            if nxt is None:
                break
            if seqs:
                if int(nxt["first"]) <= max(seqs) + 1:
                    src.index = i + 1
                    continue
                break
            first_time = _first_time(files[i + 1])
            if first_time is not None and first_time < self._t0:
                src.index = i + 1
                continue
            break
        return src

    def _take(self, src: _Source, line: bytes, path: Path) -> None:
        try:
            ev = json.loads(line)
            if not isinstance(ev, dict):
                raise ValueError
        except ValueError:
            self.skipped_lines += 1
            return
        key = _key(ev)
        seen = self._w0.get(key[1])
        if seen is not None:
            if key[2] <= seen[0]:
                return
        elif key[0] < self._t0:
            return
        src.buf.append(Item(ev, line, f"{path}:{src.line_no}", key, "",
                            (src.prefix, str(path), src.offset, src.line_no)))

    # ---- reading ------------------------------------------------------------------------

    def poll(self, limit: int = 1000) -> list[Item]:
        """Up to `limit` new events, merged across writers in time order."""
        self._refresh()
        heap: list[tuple[tuple[str, str, int], str]] = []
        for prefix, src in self._sources.items():
            src.fill(self)
            if src.buf:
                heap.append((src.buf[0].key, prefix))
        heapq.heapify(heap)
        out: list[Item] = []
        while heap and len(out) < limit:
            _, prefix = heapq.heappop(heap)
            src = self._sources[prefix]
            out.append(src.buf.popleft())
            src.fill(self)
            if src.buf:
                heapq.heappush(heap, (src.buf[0].key, prefix))
        return out

    def ack(self, item: Item) -> None:
        t, writer, seq = item.key
        self._delivered[writer] = [seq, t]
        if t > self._high:
            self._high = t
        if item.pos is not None:
            self._acked_pos[item.pos[0]] = item.pos

    # ---- the shared tail ----------------------------------------------------------------

    def has_read(self, item: Item) -> bool:
        """Whether this reader's read position is at or past `item` (from any reader of
        the same directory)."""
        if item.pos is None:
            return False
        src = self._sources.get(item.pos[0])
        if src is None or src.index >= len(src.files):
            return False
        here = src.files[src.index]
        path = Path(item.pos[1])
        if path == here:
            return item.pos[2] <= src.offset
        try:
            return src.files.index(path) < src.index
        except ValueError:  # a segment this reader has not listed yet: newer
            return False

    def resume(self) -> None:
        """Read on from just after the last acked item of each source (items it acked
        came from the shared tail, past this reader's own position)."""
        self._refresh()  # the segments (and writers) the tail's items came from
        for prefix, (_, path, offset, line_no) in self._acked_pos.items():
            src = self._sources.get(prefix)
            if src is None:
                continue
            try:
                index = src.files.index(Path(path))
            except ValueError:
                continue
            if (index, offset) > (src.index, src.offset):
                src.index, src.offset, src.line_no = index, offset, line_no
                src.buf.clear()

    def fork(self) -> DirReader:
        """A reader at this one's read position (the shared tail starts there)."""
        other = DirReader(self.root)
        other._t0, other._w0 = self._t0, dict(self._w0)
        other._sources = {
            k: _Source(list(s.files), s.prefix, s.index, s.offset, s.line_no, deque(s.buf))
            for k, s in self._sources.items()}
        return other

    def close(self) -> None:
        """Nothing held between polls (files are opened per read)."""

    def cursor(self) -> str:
        floor = self._t0
        if self._high:
            if self._trail[0] != self._high:  # parsing a time is slow: once per new high
                try:
                    self._trail = (self._high, format_time(parse_time(self._high) - GRACE_S))
                except ValueError:
                    self._trail = (self._high, "")
            floor = max(floor, self._trail[1])
        w = {k: v for k, v in self._delivered.items() if str(v[1]) >= floor}
        return "f1." + _b64({"t": floor, "w": w})


def _first_time(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            line = f.readline()
        return str(json.loads(line).get("time", "")) if line.endswith(b"\n") else None
    except (OSError, ValueError, AttributeError):
        return None


class StreamReader:
    """A Redis stream read forward with XRANGE from the last delivered id."""

    def __init__(self, url: str, stream: str, cursor: str = "") -> None:
        self.stream, self._url = stream, url
        self._r = connect(url, timeout=5.0)
        self._last = "0-0"
        if cursor:
            if not cursor.startswith("r1."):
                raise CursorError("not a stream audit cursor")
            self._last = cursor[3:]
            if not self._last.replace("-", "").isdigit():
                raise CursorError("malformed stream cursor")
        self._acked = self._last
        self.skipped_lines = 0

    def poll(self, limit: int = 1000) -> list[Item]:
        """Up to `limit` new events; fewer only at the end of the stream (an entry that is
        not an event is skipped without shortening the answer)."""
        out: list[Item] = []
        while len(out) < limit:
            want = limit - len(out)
            # connect() keeps replies as bytes (no decode_responses); redis-py types them
            # loosely.
            rows = cast(StreamRows, self._r.xrange(
                self.stream, min="(" + self._last, max="+", count=want))
            for sid, fields in rows:
                sid_s = sid.decode()
                self._last = sid_s
                line = fields.get(EVENT_FIELD.encode())
                try:
                    ev = json.loads(line) if line is not None else None
                    if not isinstance(ev, dict):
                        raise ValueError
                except ValueError:
                    self.skipped_lines += 1
                    continue
                # A missing line left ev None, skipped above: line is the event's bytes.
                out.append(Item(ev, cast(bytes, line), f"{self.stream}@{sid_s}", _key(ev), sid_s))
            if len(rows) < want:
                break
        return out

    def ack(self, item: Item) -> None:
        self._acked = item.stream_id

    def cursor(self) -> str:
        return "r1." + self._acked

    def has_read(self, item: Item) -> bool:
        return _sid(item.stream_id) <= _sid(self._last)

    def resume(self) -> None:
        self._last = self._acked

    def fork(self) -> StreamReader:
        other = StreamReader.__new__(StreamReader)
        other.stream, other._r = self.stream, connect(self._url, timeout=5.0)
        other._last = other._acked = self._last
        other._url, other.skipped_lines = self._url, 0
        return other

    def close(self) -> None:
        self._r.close()


def _sid(stream_id: str) -> tuple[int, int]:
    ms, _, n = stream_id.partition("-")
    return int(ms or 0), int(n or 0)


def open_reader(
    audit_dir: str | None = None, redis_url: str | None = None, stream: str | None = None,
    cursor: str = "",
) -> DirReader | StreamReader:
    if redis_url:
        return StreamReader(redis_url, stream or "proctor:audit", cursor)
    if audit_dir is None:
        raise ValueError("give an audit directory or a Redis URL and stream")
    return DirReader(audit_dir, cursor)
