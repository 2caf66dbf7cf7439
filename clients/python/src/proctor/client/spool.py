"""The local spool: every decision a client made in process, on disk until the server acks it.

Local evaluation (proctor.client.local) writes each decision here on the caller's
path, before evaluate() returns, with one write(2) of a small record; a shipper
thread reads the records back in order and sends them to Audit.IngestDecisions.
A record is written through to the kernel, so a client killed with SIGKILL keeps
every decision it answered: the next client on the same spool directory adopts
the dead one's spool and ships what it left (see `adopt_orphans`).

Layout, under `root/<key>/` (key: a hash of the server target):

    <instance>/lock        flock'd by the live client that owns the instance
    <instance>/NNNNNNNN    segments of records: a 4-byte little-endian length, then the
                           record (a marshal'd tuple, see proctor.client.local)
    <instance>/acked       "segment offset": where the unacknowledged records start

The spool is bounded (`max_bytes` of unacknowledged records): past it, `append`
refuses and the caller stops deciding locally (it asks the server, or fails closed),
so no evidence is ever dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import marshal
import os
import shutil
import struct
import threading
import uuid
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 64 << 20
ROTATE_BYTES = 4 << 20
_LEN = struct.Struct("<I")
_pack_len = _LEN.pack
_dumps = marshal.dumps


def default_root() -> Path:
    """$PROCTOR_SPOOL_DIR, else $XDG_CACHE_HOME/proctor/spool, else ~/.cache/proctor/spool."""
    explicit = os.environ.get("PROCTOR_SPOOL_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "proctor" / "spool"


def key_of(target: str) -> str:
    """The folder of one server's spools: clients of different servers never mix."""
    return hashlib.sha256(target.encode()).hexdigest()[:16]


def _segment_name(n: int) -> str:
    return f"{n:08d}"


class Spool:
    """One instance's segments: appended to by its owner, read and acknowledged by its shipper.

    `append` and `read`/`ack` may run in different threads; one lock covers the
    offsets. An adopted spool (a dead client's) is only read.
    """

    def __init__(self, folder: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 owner: bool = True) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.owner = owner
        self._lock = threading.Lock()
        if owner:
            # Made under a dotted name and locked before it gets its real one: an adopting
            # client never takes a folder whose owner is still setting it up.
            making = folder.with_name("." + folder.name)
            making.mkdir(parents=True)
            self._lock_fd = os.open(making / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            os.rename(making, folder)
        else:
            self._lock_fd = os.open(folder / "lock", os.O_RDWR)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                raise
        self._acked_fd = os.open(folder / "acked", os.O_RDWR | os.O_CREAT, 0o600)
        seg, off = self._load_acked()
        segments = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
        for old in (s for s in segments if s < seg):
            os.unlink(folder / _segment_name(old))
        # (segment, offset) of the first unacknowledged record, the first unsent one,
        # and the end of what was written.
        self.acked = (seg, off)
        self.sent = (seg, off)
        last = max([seg, *segments])
        self._segment = last
        self._fd = os.open(folder / _segment_name(last),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = os.fstat(self._fd).st_size
        # Bytes written but not acknowledged, for the bound.
        self.backlog = sum(self._size(s) for s in segments if s >= seg) - off
        self.closed = False

    # -- the caller's side ----------------------------------------------------------

    def append(self, record: tuple[Any, ...]) -> bool:
        """Write one record through to the kernel; False (nothing written) past the bound."""
        data = _dumps(record, 4)
        framed = _pack_len(len(data)) + data
        n = len(framed)
        with self._lock:
            if self.closed or self.backlog + n > self.max_bytes:
                return False
            if self._written >= ROTATE_BYTES:
                self._rotate()
            os.write(self._fd, framed)
            self._written += n
            self.backlog += n
        return True

    def _rotate(self) -> None:
        os.close(self._fd)
        self._segment += 1
        self._fd = os.open(self.folder / _segment_name(self._segment),
                           os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = 0

    # -- the shipper's side ---------------------------------------------------------

    def read(self, max_items: int, max_bytes: int = 1 << 20,
             ) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
        """Up to `max_items` records (and about `max_bytes`, at least one record) after the
        last one read, and the position after them."""
        records: list[tuple[Any, ...]] = []
        taken = 0
        seg, off = self.sent
        with self._lock:
            current, written = self._segment, self._written
        while len(records) < max_items:
            end = written if seg == current else self._size(seg)
            if off >= end:
                if seg >= current:
                    break
                seg, off = seg + 1, 0
                continue
            with open(self.folder / _segment_name(seg), "rb") as f:
                f.seek(off)
                data = f.read(min(end - off, 1 << 20))
            pos = 0
            while len(records) < max_items and pos + 4 <= len(data):
                (n,) = _LEN.unpack_from(data, pos)
                if pos + 4 + n > len(data) or (records and taken + n > max_bytes):
                    break
                records.append(marshal.loads(data[pos + 4:pos + 4 + n]))
                pos += 4 + n
                taken += 4 + n
            if records and taken + 4 > max_bytes:
                off += pos
                break
            if pos == 0:
                if seg == current or records:
                    break
                off = end  # a record cut short by a crash ends a finished segment
                continue
            off += pos
        self.sent = (seg, off)
        return records, (seg, off)

    def ack(self, position: tuple[int, int]) -> None:
        """The server stored every record before `position`: forget them."""
        seg, off = position
        done = list(range(self.acked[0], seg))
        freed = sum(self._size(s) for s in done) - self.acked[1] + off
        os.pwrite(self._acked_fd, f"{seg:08d} {off:016d}\n".encode(), 0)
        for s in done:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / _segment_name(s))
        with self._lock:
            self.acked = position
            self.backlog -= freed

    def rewind(self) -> None:
        """Send again from the first unacknowledged record (a new IngestDecisions stream)."""
        self.sent = self.acked

    @property
    def pending(self) -> bool:
        """Records written and not yet acknowledged."""
        return self.backlog > 0

    def unread(self) -> bool:
        with self._lock:
            return self.sent != (self._segment, self._written)

    def close(self, remove: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            os.close(self._fd)
        os.close(self._acked_fd)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._lock_fd)  # releases the flock: another client may adopt what is left

    def _size(self, seg: int) -> int:
        try:
            return os.stat(self.folder / _segment_name(seg)).st_size
        except FileNotFoundError:
            return 0

    def _load_acked(self) -> tuple[int, int]:
        raw = os.pread(self._acked_fd, 64, 0).decode(errors="replace").split()
        if len(raw) == 2 and raw[0].isdigit() and raw[1].isdigit():
            return int(raw[0]), int(raw[1])
        return 0, 0


def open_spool(root: Path, key: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Spool:
    """A new instance's spool under root/key, owned (flock'd) by this client."""
    return Spool(root / key / uuid.uuid4().hex, max_bytes, owner=True)


def adopt_orphans(root: Path, key: str) -> list[Spool]:
    """The spools under root/key that no live client holds (their owner died or closed with
    records unshipped), oldest first: the caller ships their records before its own."""
    base = root / key
    if not base.is_dir():
        return []
    found = []
    for p in base.iterdir():
        try:
            if p.is_dir() and not p.name.startswith("."):
                found.append((p.stat().st_mtime, p))
        except OSError:
            continue  # gone meanwhile
    out = []
    for _, folder in sorted(found):
        try:
            out.append(Spool(folder, owner=False))
        except OSError:
            continue  # a live client owns it (or it went away)
    return out
