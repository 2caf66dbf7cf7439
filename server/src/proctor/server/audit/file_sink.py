"""The file sink: append-only JSONL segments per writer, rotated by size, group-committed.

Segments are named `<writer>-<first seq, 12 digits>.jsonl` (the writer made
file-name safe), so one writer's chain is its segments in name order. Each batch
is one write() and one fdatasync(); a failed write is truncated away before the
writer retries it. A process killed mid-write can leave a torn last line: the
next writer (a new process, or the same name resuming) starts a fresh segment,
and `proctor audit verify` reports the torn tail.

After each group commit the sink replaces the writer's head checkpoint (head.py):
the last seq and hash stored, so verify can tell a cut tail or deleted segments.

The writer calls the sink on the event loop; every file operation runs in the
sink's own thread, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .event import safe_name
from .head import HeadWriter, write_head
from .sink import Sealed, SinkCaps

T = TypeVar("T")

log = logging.getLogger("proctor.audit")

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
SEGMENT_RE = re.compile(r"^(?P<prefix>.+)-(?P<first>\d{12})(?:\.(?P<n>\d+))?\.jsonl$")


def list_segments(root: Path) -> dict[str, list[Path]]:
    """Segments under root grouped by writer prefix, each list in chain order."""
    groups: dict[str, list[tuple[int, int, Path]]] = {}
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return {}
    for name in names:
        m = SEGMENT_RE.match(name)
        if m is None:
            continue
        groups.setdefault(m["prefix"], []).append(
            (int(m["first"]), int(m["n"] or 0), root / name)
        )
    return {k: [p for _, _, p in sorted(v)] for k, v in groups.items()}


def last_complete_line(path: Path, chunk: int = 65536) -> bytes | None:
    """The last newline-terminated line of a file (a torn tail is skipped), or None."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        pos = end
        buf = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            last_nl = buf.rfind(b"\n")
            if last_nl < 0:
                continue
            start = buf.rfind(b"\n", 0, last_nl)
            if start >= 0 or pos == 0:
                return buf[start + 1 : last_nl + 1]
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSink:
    """Append-only JSONL segments under `root` for one writer."""

    name = "file"

    def __init__(
        self, root: str | os.PathLike[str], segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync: bool = True, hmac_key: bytes | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = max(1, segment_bytes)
        self._fsync = fsync
        self.caps = SinkCaps(durable=fsync, resumable=True)
        self._fd: int | None = None
        self._size = 0
        self.path: Path | None = None
        self._last_seq = 0
        self._io = ThreadPoolExecutor(1, thread_name_prefix="audit-file")
        self._key = hmac_key  # signs the head checkpoints
        self._headed = False  # a head was written for this sink's writer
        self._heads = HeadWriter(self.root, hmac_key, fsync)
        self.segments_opened = 0
        self.fsyncs = 0

    def last_stored(self, writer: str) -> tuple[int, str] | None:
        """(seq, hash) of the last complete event of `writer` under root, or None."""
        segments = list_segments(self.root).get(safe_name(writer), [])
        for path in reversed(segments):
            line = last_complete_line(path)
            if line is None:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                return None
            if obj.get("writer") == writer and isinstance(obj.get("seq"), int):
                return obj["seq"], str(obj.get("hash", ""))
            return None
        return None

    # ---- Sink: each call runs the blocking one below in the sink's own thread ---------

    async def resume(self, writer: str) -> tuple[int, str] | None:
        return await self._in_thread(self.last_stored, writer)

    async def write(self, batch: list[Sealed]) -> None:
        await self._in_thread(self.write_blocking, batch)

    async def close(self) -> None:
        await self._in_thread(self.close_blocking)
        self._io.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    # ---- blocking -----------------------------------------------------------------------

    def write_blocking(self, batch: list[Sealed]) -> None:
        """Append the batch and fdatasync it, then checkpoint the head; raises OSError
        having left none of the batch (a retry skips what is already stored)."""
        if not batch:
            return
        last = batch[-1]  # checkpointed even when a retry finds it all stored already
        if not self._headed:
            self._first_head(batch[0])
        # The usual batch: new, and it fits the open segment. One pass joins it (this
        # thread holds the GIL while it loops over events; requests wait for that).
        if self._fd is not None and batch[0].seq > self._last_seq:
            data = b"".join([s.line for s in batch])
            if self._size + len(data) <= self.segment_bytes:
                self._append(data)
                self._last_seq = last.seq
                self._checkpoint(last)
                return
        # A retried batch may have partly landed (an earlier segment of it): skip what did.
        batch = [s for s in batch if s.seq > self._last_seq]
        i = 0
        while i < len(batch):
            first = batch[i]
            if self._fd is None or (
                self._size and self._size + len(first.line) > self.segment_bytes
            ):
                self._open_segment(first.writer, first.seq)
            room = self.segment_bytes - self._size
            j, size = i + 1, len(first.line)
            while j < len(batch) and size + len(batch[j].line) <= room:
                size += len(batch[j].line)
                j += 1
            self._append(b"".join(s.line for s in batch[i:j]))
            self._last_seq = batch[j - 1].seq
            i = j
        self._checkpoint(last)

    def _first_head(self, first: Sealed) -> None:
        """Before a writer's first batch: a head at the event its chain continues from
        (seq 0 for a new chain), so a crash before the first checkpoint leaves a head."""
        prev = json.loads(first.line).get("prev_hash", "")
        write_head(self.root, first.writer, first.seq - 1, str(prev), "", self._key,
                   self._fsync)
        self._headed = True

    def _checkpoint(self, last: Sealed) -> None:
        """Have the head checkpoint replaced with the last stored event (after its
        fdatasync; HeadWriter's thread writes it). The stored line ends with its hash
        (and hmac): `"hash":"<64 hex>"...}`."""
        at = last.line.rfind(b'"hash":"') + 8
        digest = last.line[at : at + 64].decode("ascii")
        segment = self.path.name if self.path is not None else ""
        self._heads.update(last.writer, last.seq, digest, segment)

    def _append(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None
        start = self._size
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._fsync:
                os.fdatasync(fd)
                self.fsyncs += 1
        except BaseException:
            self._cut_back(start)
            raise
        self._size = start + len(data)

    def _cut_back(self, size: int) -> None:
        """Truncate the open segment to `size` after a failed write, so the retry does
        not follow a partial batch; a segment that cannot be cut is left for a new one."""
        try:
            os.ftruncate(self._fd, size)  # type: ignore[arg-type]
            self._size = size
        except OSError:
            self._close_fd()

    def _open_segment(self, writer: str, first_seq: int) -> None:
        self._close_fd()
        base = f"{safe_name(writer)}-{first_seq:012d}"
        n = 0
        while True:
            path = self.root / (f"{base}.jsonl" if n == 0 else f"{base}.{n}.jsonl")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
                break
            except FileExistsError:
                n += 1
        if self._fsync:
            _fsync_dir(self.root)
        self._fd, self._size, self.path = fd, 0, path
        self.segments_opened += 1

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close_blocking(self) -> None:
        if self._fd is not None and self._fsync:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
        self._close_fd()
        self._heads.close()
