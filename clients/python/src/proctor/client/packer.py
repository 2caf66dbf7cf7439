"""The packer: spooled records into serialized IngestBatch messages, in a child process.

Turning a thousand spool records into protobuf messages is milliseconds of Python; done
in the shipper thread, it holds the GIL that long, and a caller deciding locally (a few
microseconds of Python each) waits for it. So the shipper asks a child process
(`python -m proctor.client.packer`, started by `Packer`) instead: the child reads the
records from the segment file itself (the spool is on disk; it only reads), builds and
serializes the batch and hands back its bytes. The shipper thread keeps the channel and
its credentials, sends those bytes as they are, and holds the GIL only briefly per batch.

The exchange on the child's stdin and stdout, one request and one reply at a time:

    request  _REQUEST (batch_seq, offset, end, max_items, max_bytes, path length), path
    reply    _REPLY (bytes of records consumed, records, payload length), payload

A reply of `_FAILED` records carries an error message as its payload. The child exits at
EOF on its stdin, so it ends with its parent however the parent ends. When the child
cannot start, dies or fails, `Packer` packs in the calling thread (and logs it once), and
tries a new child for later batches a few times; positions stay with the caller, so a
batch is never skipped or reordered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import subprocess
import sys
from typing import IO, Any

from proctor.v1 import audit_pb2, decisions_pb2

from .spool import read_records

log = logging.getLogger("proctor.client.local")
_REQUEST = struct.Struct("<QQQIII")
_REPLY = struct.Struct("<QII")
_FAILED = 0xFFFFFFFF
# New children tried after one failed before packing in the shipper thread for good.
MAX_RESTARTS = 3


def to_local_decision(record: tuple[Any, ...]) -> audit_pb2.LocalDecision:
    """The LocalDecision of one spool record (the tuple proctor.client.local writes)."""
    (topic, path, tags, tenant, run_id, request_id, labels, decision, rule_id, reason,
     version, decision_id, derived, decided_ns, latency_us) = record
    out = audit_pb2.LocalDecision(
        request=decisions_pb2.EvaluateRequest(
            topic=topic, delegation_path=path, risk_tags=tags, tenant=tenant, run_id=run_id,
            request_id=request_id, labels=labels or {}),
        response=decisions_pb2.EvaluateResponse(
            decision=decision, rule_id=rule_id, reason=reason, policy_version=version,
            decision_id=decision_id, derived_tags=derived),
        latency_us=latency_us,
    )
    out.decided_at.FromNanoseconds(decided_ns)
    return out


def pack_file(path: str, offset: int, end: int, seq: int, max_items: int,
              max_bytes: int) -> tuple[bytes, int, int]:
    """IngestBatch `seq` of the records at [offset, end) of a segment file, up to
    `max_items` records and about `max_bytes` (at least one record): its serialized bytes,
    the bytes of records it took and their count."""
    records, taken = read_records(path, offset, end, max_items, max_bytes)
    batch = audit_pb2.IngestBatch(batch_seq=seq,
                                  decisions=[to_local_decision(r) for r in records])
    return batch.SerializeToString(), taken, len(records)


class PackerFailed(Exception):
    """The child process died, or answered something other than a batch."""


class Packer:
    """pack_file in a child process, or in the calling thread when there is none.

    Used by one thread (the shipper's)."""

    def __init__(self, use_child: bool = True) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarts = 0 if use_child else MAX_RESTARTS + 1
        self._warned = False

    def pack(self, path: str, offset: int, end: int, seq: int, max_items: int,
             max_bytes: int) -> tuple[bytes, int, int]:
        proc = self._child()
        if proc is not None:
            try:
                return self._ask(proc, path, offset, end, seq, max_items, max_bytes)
            # ValueError: close() closed its pipes meanwhile (the shipper stopping late).
            except (OSError, ValueError, PackerFailed, struct.error) as e:
                self._lost(e)
        return pack_file(path, offset, end, seq, max_items, max_bytes)

    @property
    def pid(self) -> int | None:
        """The child's process id, while there is one."""
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        self._restarts = MAX_RESTARTS + 1
        if proc is not None:
            _stop(proc)

    def _child(self) -> subprocess.Popen[bytes] | None:
        if self._proc is None and self._restarts <= MAX_RESTARTS:
            try:
                self._proc = _start()
            except OSError as e:
                self._lost(e)
        return self._proc

    def _ask(self, proc: subprocess.Popen[bytes], path: str, offset: int, end: int,
             seq: int, max_items: int, max_bytes: int) -> tuple[bytes, int, int]:
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        name = os.fsencode(path)
        stdin.write(_REQUEST.pack(seq, offset, end, max_items, max_bytes, len(name)) + name)
        stdin.flush()
        consumed, count, size = _REPLY.unpack(_read(stdout, _REPLY.size))
        payload = _read(stdout, size)
        if count == _FAILED:
            raise PackerFailed(payload.decode(errors="replace"))
        return payload, consumed, count

    def _lost(self, error: BaseException) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)
            error = PackerFailed(f"{error} (exit code {proc.returncode})")
        self._restarts += 1
        if not self._warned:
            self._warned = True
            log.warning("the local decisions' packer process failed, packing in the "
                        "shipper thread meanwhile: %s", error)


def _start() -> subprocess.Popen[bytes]:
    # The child imports what this process imports: its sys.path, whatever set it.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.Popen(
        [sys.executable, "-m", "proctor.client.packer"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, close_fds=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        proc.wait(2.0)  # EOF on its stdin ends it
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise PackerFailed("the packer process exited")
    return data


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: answer requests until EOF."""
    while True:
        head = requests.read(_REQUEST.size)
        if len(head) < _REQUEST.size:
            return
        seq, offset, end, max_items, max_bytes, name_len = _REQUEST.unpack(head)
        path = os.fsdecode(requests.read(name_len))
        try:
            payload, consumed, count = pack_file(path, offset, end, seq, max_items, max_bytes)
        except Exception as e:  # the parent packs this one itself and says why
            payload, consumed, count = f"{type(e).__name__}: {e}".encode(), 0, _FAILED
        replies.write(_REPLY.pack(consumed, count, len(payload)))
        replies.write(payload)
        replies.flush()


def main() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent decides when this one ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
