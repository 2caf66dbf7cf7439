"""`proctor audit consume`: a Redis consumer group member that loses nothing and writes once.

Order of work on start: repair a torn tail of our own output (a write cut by a
crash, never acknowledged), load the event ids already written by every output
file in the directory, re-read our own pending entries (delivered before a
crash, never acknowledged), then XAUTOCLAIM entries idle longer than
`claim_idle_ms` in other consumers' pending lists (a dead consumer's), then read
new entries. Each batch is appended to `<out>/<group>-<consumer>.jsonl` and
fsynced before XACK; an entry whose event id is already written is acknowledged
without writing it again, so redelivery after a crash is idempotent.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, cast

import redis

from .event import safe_name
from .redis_sink import EVENT_FIELD, connect

log = logging.getLogger("proctor.audit.consume")


# XREADGROUP's reply on a bytes connection: [stream, [(entry id, fields or None if deleted)]].
_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]] | None


class Consumer:
    def __init__(
        self,
        url: str,
        stream: str,
        group: str,
        consumer: str,
        out_dir: str | os.PathLike[str],
        claim_idle_ms: int = 30_000,
        batch: int = 500,
        block_ms: int = 1000,
        start_id: str = "0",
    ) -> None:
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / f"{safe_name(group)}-{safe_name(consumer)}.jsonl"
        self.claim_idle_ms = claim_idle_ms
        self.batch = batch
        self.block_ms = block_ms
        self.start_id = start_id
        self._r = connect(url, timeout=max(5.0, block_ms / 1000 + 2))
        self._seen: set[str] = set()
        self._fd: int | None = None
        self.written = 0
        self.duplicates = 0
        self.acked = 0
        self.claimed = 0
        self._stop = False

    # ---- setup --------------------------------------------------------------------------

    def _repair_and_load(self) -> None:
        if self.path.exists():
            data_len = self.path.stat().st_size
            with open(self.path, "rb") as f:
                data = f.read()
            cut = data.rfind(b"\n") + 1
            if cut != data_len:
                log.warning("%s: dropping a torn last line (%d bytes)", self.path, data_len - cut)
                with open(self.path, "r+b") as f:
                    f.truncate(cut)
                    os.fsync(f.fileno())
        for path in sorted(self.out_dir.glob("*.jsonl")):
            with open(path, "rb") as f:
                for line in f:
                    key = _event_key(line.rstrip(b"\n"))
                    if key:
                        self._seen.add(key)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _ensure_group(self) -> None:
        try:
            self._r.xgroup_create(self.stream, self.group, id=self.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # ---- work ---------------------------------------------------------------------------

    def handle(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> int:
        """Write the new events of `entries` durably, then acknowledge all of them."""
        out: list[bytes] = []
        ids: list[bytes] = []
        for sid, fields in entries:
            ids.append(sid)
            if not fields:
                continue  # trimmed from the stream while pending: nothing to write
            line = fields.get(EVENT_FIELD.encode())
            if line is None:
                continue
            key = _event_key(line)
            if key and key in self._seen:
                self.duplicates += 1
                continue
            if key:
                self._seen.add(key)
            out.append(line.rstrip(b"\n") + b"\n")
        if out:
            data = memoryview(b"".join(out))
            assert self._fd is not None
            while data:
                data = data[os.write(self._fd, data) :]
            os.fsync(self._fd)
            self.written += len(out)
        if ids:
            self._r.xack(self.stream, self.group, *ids)
            self.acked += len(ids)
        return len(out)

    def _own_pending(self) -> int:
        n = 0
        last: str | bytes = "0-0"
        while True:
            # Bytes replies (see `_Reply`); redis-py types them loosely.
            resp = cast(_Reply, self._r.xreadgroup(
                self.group, self.consumer, {self.stream: last}, count=self.batch
            ))
            entries = resp[0][1] if resp else []
            if not entries:
                return n
            n += len(entries)
            self.handle(entries)
            last = entries[-1][0]

    def _claim(self) -> int:
        n, start = 0, "0-0"
        while True:
            resp = self._r.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, start, count=self.batch
            )
            start, entries = resp[0], resp[1]
            deleted = resp[2] if len(resp) > 2 else []
            if deleted:
                self._r.xack(self.stream, self.group, *deleted)
            if entries:
                n += len(entries)
                self.claimed += len(entries)
                self.handle(entries)
            if start in (b"0-0", "0-0"):
                return n

    def stop(self, *_: Any) -> None:
        self._stop = True

    def run(self, max_idle: float | None = None) -> int:
        """Consume until stopped (SIGTERM/SIGINT) or idle for `max_idle` seconds."""
        self._repair_and_load()
        idle_since = time.monotonic()
        next_claim = 0.0
        ready = False
        while not self._stop:
            try:
                if not ready:
                    self._ensure_group()
                    self._own_pending()
                    ready = True
                now = time.monotonic()
                got = 0
                if now >= next_claim:
                    got += self._claim()
                    next_claim = now + max(0.5, self.claim_idle_ms / 2000)
                resp = cast(_Reply, self._r.xreadgroup(
                    self.group, self.consumer, {self.stream: ">"}, count=self.batch,
                    block=self.block_ms,
                ))
                for _, entries in resp or []:
                    got += len(entries)
                    self.handle(entries)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("audit consume: redis unavailable (%s); retrying", exc)
                ready = False
                time.sleep(0.5)
                continue
            if got:
                idle_since = time.monotonic()
            elif max_idle is not None and time.monotonic() - idle_since >= max_idle:
                break
        self.close()
        return 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._r.close()


def _event_key(line: bytes) -> str:
    try:
        ev = json.loads(line)
        return str(ev["event_id"])
    except (ValueError, KeyError, TypeError):
        return ""


def run_consumer(args: Any) -> int:
    c = Consumer(
        args.redis_url, args.audit_stream, args.group, args.consumer, args.out,
        claim_idle_ms=args.claim_idle_ms, batch=args.batch, start_id=args.start_id,
    )
    signal.signal(signal.SIGTERM, c.stop)
    signal.signal(signal.SIGINT, c.stop)
    code = c.run(max_idle=args.max_idle)
    print(
        f"consumed: {c.written} written, {c.duplicates} duplicates skipped, "
        f"{c.claimed} claimed, {c.acked} acknowledged -> {c.path}"
    )
    return code
