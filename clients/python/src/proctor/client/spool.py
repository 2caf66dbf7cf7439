"""The local spool: every decision a client made in process, on disk until the server acks it.

Local evaluation (proctor.client.local) writes each decision here on the caller's
path, before evaluate() returns; a shipper thread reads the records back in order
and sends them to Audit.IngestDecisions.

The shipper hands each span of unsent records (`unsent`) to a packer process
(proctor.client.packer), which reads the segment file itself.

A record is stored into a shared memory map of the current segment file, not
written with write(2): the bytes are in the kernel's page cache the moment the
store is done, so a client killed with SIGKILL keeps every decision it answered
(the next client on the same spool directory adopts the dead one's spool and ships
what it left, see `adopt_orphans`), and the caller's path makes no system call.
A system call releases the GIL, and the shipper thread, always waiting for it,
would take it then and hold the caller up for as long as it runs.

Layout, under `root/<key>/` (key: a hash of the server target):

    <instance>/lock        flock'd by the live client that owns the instance
    <instance>/NNNNNNNN    segments of records: a 4-byte little-endian length, then the
                           record (a marshal'd tuple, see proctor.client.local). A segment
                           is made ROTATE_BYTES long (zeros) and mapped; a length of zero
                           ends its records. The payload is stored before its length, so
                           a record cut short by a kill reads as the end.
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
import mmap
import os
import shutil
import struct
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 64 << 20
ROTATE_BYTES = 4 << 20
# madvise(MADV_POPULATE_WRITE), Linux 5.14+: fault every page of a new segment in,
# writable, at once. Otherwise the first store into each 4 KiB page faults (a page of
# the file to allocate and map), which is one decision in about twenty held up for a
# microsecond or two.
_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE",
                          23 if sys.platform.startswith("linux") else None)
_LEN = struct.Struct("<I")
_pack_len_into = _LEN.pack_into
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


def _extent(data: bytes) -> int:
    """Where the complete records of a segment's bytes end (a zero length or the end)."""
    pos = 0
    while pos + 4 <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if n == 0 or pos + 4 + n > len(data):
            break
        pos += 4 + n
    return pos


def read_records(path: str, offset: int, end: int, max_items: int,
                 max_bytes: int) -> tuple[list[tuple[Any, ...]], int]:
    """The records at [offset, end) of a segment file, up to `max_items` of them and about
    `max_bytes` (at least one record), and the bytes they took. The shipper's packer
    (proctor.client.packer) reads the spool with this, in a process of its own."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, min(end - offset, max_bytes + 4), offset)
        if len(data) >= 4 and 4 + _LEN.unpack_from(data)[0] > len(data) < end - offset:
            data = os.pread(fd, 4 + _LEN.unpack_from(data)[0], offset)  # one big record
    finally:
        os.close(fd)
    records: list[tuple[Any, ...]] = []
    pos = 0
    while len(records) < max_items and pos + 4 <= len(data):
        (n,) = _LEN.unpack_from(data, pos)
        if n == 0 or pos + 4 + n > len(data) or (records and pos + 4 + n > max_bytes):
            break
        records.append(marshal.loads(data[pos + 4:pos + 4 + n]))
        pos += 4 + n
    return records, pos


class Spool:
    """One instance's segments: appended to by its owner, read and acknowledged by its shipper.

    `append` may run in any caller thread (a lock orders them) and `read`/`ack` in the
    shipper's; what the shipper needs of the writer's progress is `end`, replaced whole
    by each append. An adopted spool (a dead client's) is only read.
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
        # Where each segment's records end (a zero-filled tail is no record).
        self._ends = {s: _extent((folder / _segment_name(s)).read_bytes())
                      for s in segments if s >= seg}
        # (segment, offset) of the first unacknowledged record and of the first unsent one.
        self.acked = (seg, off)
        self.sent = (seg, off)
        last = max([seg, *segments])
        # The segment being written, its map and where its records end.
        self._segment = last
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._written = self._ends.pop(last, 0)
        # (segment, offset) after the last record written: the shipper reads up to it.
        self.end = (last, self._written)
        # Bytes appended and bytes acknowledged, each counted by one thread only;
        # the difference (unacknowledged bytes) is bounded.
        self._appended = sum(self._ends.values()) + self._written - off
        self._freed = 0
        self.closed = False
        if owner:
            self._map_segment(last, ROTATE_BYTES)

    # -- the caller's side ----------------------------------------------------------

    def append(self, record: tuple[Any, ...]) -> bool:
        """Store one record in the spool; False (nothing stored) past the bound."""
        data = _dumps(record, 4)
        n = len(data) + 4
        with self._lock:
            if self.closed or self._appended - self._freed + n > self.max_bytes:
                return False
            pos = self._written
            m = self._map
            if m is None or pos + n > len(m):
                self._rotate(n)
                pos = 0
                m = self._map
                assert m is not None
            m[pos + 4:pos + n] = data
            _pack_len_into(m, pos, n - 4)  # last: until then the record is not there
            self._written = pos + n
            self._appended += n
            self.end = (self._segment, pos + n)
        return True

    def _map_segment(self, seg: int, size: int) -> None:
        fd = os.open(self.folder / _segment_name(seg), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = max(size, os.fstat(fd).st_size)
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if _POPULATE_WRITE is not None:
            with contextlib.suppress(OSError, ValueError):  # an older kernel: fault as we go
                self._map.madvise(_POPULATE_WRITE)

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            # The zeros past the last record are no use to a reader: drop them.
            os.ftruncate(self._fd, self._written)
            os.close(self._fd)
            self._fd = -1

    def _rotate(self, need: int) -> None:
        # A system call or three, once every ROTATE_BYTES.
        self._unmap()
        self._ends[self._segment] = self._written
        self._segment += 1
        self._written = 0
        self._map_segment(self._segment, max(ROTATE_BYTES, need))

    # -- the shipper's side ---------------------------------------------------------

    def read(self, max_items: int, max_bytes: int = 1 << 20,
             ) -> tuple[list[tuple[Any, ...]], tuple[int, int]]:
        """Up to `max_items` records (and about `max_bytes`, at least one record) after the
        last one read, from one segment, and the position after them."""
        span = self.unsent()
        if span is None:
            return [], self.sent
        path, offset, end = span
        records, taken = read_records(path, offset, end, max_items, max_bytes)
        return records, self.sent_to(offset + taken)

    def unsent(self) -> tuple[str, int, int] | None:
        """(segment file, offset, end) of the first unsent records, all in one segment,
        or None when every record written was read; `sent_to` marks them sent."""
        seg, off = self.sent
        current, written = self.end
        while True:
            end = written if seg == current else self._ends.get(seg, 0)
            if off < end:
                return str(self.folder / _segment_name(seg)), off, end
            if seg >= current:
                return None
            seg, off = seg + 1, 0
            self.sent = (seg, off)

    def sent_to(self, offset: int) -> tuple[int, int]:
        """The records of `unsent()`'s segment up to `offset` are sent: the position after."""
        self.sent = (self.sent[0], offset)
        return self.sent

    def ack(self, position: tuple[int, int]) -> None:
        """The server stored every record before `position`: forget them."""
        seg, off = position
        done = list(range(self.acked[0], seg))
        freed = sum(self._ends.get(s, 0) for s in done) - self.acked[1] + off
        os.pwrite(self._acked_fd, f"{seg:08d} {off:016d}\n".encode(), 0)
        for s in done:
            self._ends.pop(s, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / _segment_name(s))
        self.acked = position
        self._freed += freed

    def rewind(self) -> None:
        """Send again from the first unacknowledged record (a new IngestDecisions stream)."""
        self.sent = self.acked

    @property
    def backlog(self) -> int:
        """Bytes written and not yet acknowledged."""
        return self._appended - self._freed

    @property
    def pending(self) -> bool:
        """Records written and not yet acknowledged."""
        return self._appended > self._freed

    def unread(self) -> bool:
        return self.sent != self.end

    def close(self, remove: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._unmap()
        os.close(self._acked_fd)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
        os.close(self._lock_fd)  # releases the flock: another client may adopt what is left

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
