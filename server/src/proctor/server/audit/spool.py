"""One writer's spool: where the Redis audit sink appends batches while Redis is away.

`<root>/<writer>.jsonl`, appended and fsynced a batch at a time (a failed append is
cut back, so the file holds whole batches), read back in order from a position
kept in memory, and dropped once replayed. The live writer holds an flock on
`<writer>.lock`; a spool whose lock can be taken belongs to a dead process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

from .sink import Sealed

log = logging.getLogger("proctor.audit")


class Spool:
    """One writer's append-only spool file, read back in order."""

    def __init__(self, root: Path, writer_file: str) -> None:
        self.path = root / f"{writer_file}.jsonl"
        self.lock_path = root / f"{writer_file}.lock"
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._read_pos = 0

    def lock(self, blocking: bool = True) -> bool:
        if self._lock_fd is not None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def pending(self) -> bool:
        try:
            return self.path.stat().st_size > self._read_pos
        except FileNotFoundError:
            return False

    def append(self, batch: list[Sealed]) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        data = b"".join(s.line for s in batch)
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def last(self) -> tuple[int, str] | None:
        from .file_sink import last_complete_line

        if not self.path.exists():
            return None
        line = last_complete_line(self.path)
        if line is None:
            return None
        try:
            obj = json.loads(line)
            return int(obj["seq"]), str(obj["hash"])
        except (ValueError, KeyError, TypeError):
            return None

    def read(self, limit: int) -> tuple[list[tuple[str, int, bytes]], int]:
        """Up to `limit` complete (writer, seq, line) from the read position, and the end offset."""
        out: list[tuple[str, int, bytes]] = []
        pos = self._read_pos
        with open(self.path, "rb") as f:
            f.seek(pos)
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn tail of a dead writer: never acknowledged, skipped
                pos += len(line)
                try:
                    obj = json.loads(line)
                    out.append((str(obj["writer"]), int(obj["seq"]), line))
                except (ValueError, KeyError, TypeError):
                    log.error("audit spool %s: unreadable line skipped", self.path)
                if len(out) >= limit:
                    break
        return out, pos

    def advance(self, pos: int) -> None:
        self._read_pos = pos

    def clear(self) -> None:
        """Everything was replayed: drop the file (only while holding the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._read_pos = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.unlock()
