"""The shipper: local decisions from the spool to Audit.IngestDecisions, in order, acknowledged.

One daemon thread per local client. It reads the spools (first those a dead client
left, then its own) in batches and sends them on one IngestDecisions stream, up to
WINDOW batches ahead of the acks; a batch is forgotten (Spool.ack) only once the
server acknowledged it. When the
stream breaks (server restart, network), it reconnects with backoff and sends again
from the first unacknowledged record; the server records a replayed decision_id once.
Nothing here is on the caller's path, and little of it holds the GIL the caller needs:
the records become protobuf messages in a child process (proctor.client.packer), and this
thread sends the bytes it hands back as they are.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
from collections.abc import Sequence
from typing import Any

import grpc

from proctor.v1 import audit_pb2

from .packer import Packer
from .spool import Spool

log = logging.getLogger("proctor.client.local")
# Decisions per IngestBatch (the server takes up to 1,000), and their spooled bytes: a batch
# stays well inside the 1 MiB message limit whatever the requests carry.
BATCH = 1000
BATCH_BYTES = 512 << 10
# Batches sent and not yet acknowledged.
WINDOW = 4
POLL_SECONDS = 0.005
# After IDLE_POLLS empty polls in a row the shipper looks every IDLE_POLL_SECONDS instead:
# each wake-up takes the GIL, and a caller deciding then waits for it.
IDLE_POLLS = 20
IDLE_POLL_SECONDS = 0.05


class Shipper:
    """Ships `own` (and the adopted `orphans` first) until closed."""

    def __init__(self, channel: grpc.Channel, metadata: Sequence[tuple[str, str]],
                 own: Spool, orphans: Sequence[Spool] = ()) -> None:
        # Requests go out as the packer serialized them (no request serializer).
        self._ingest: grpc.StreamStreamMultiCallable[bytes, audit_pb2.IngestAck] = (
            channel.stream_stream("/proctor.v1.Audit/IngestDecisions",
                                  response_deserializer=audit_pb2.IngestAck.FromString))
        self.packer = Packer()
        self._metadata = tuple(metadata)
        self.own = own
        self.orphans = list(orphans)
        # The shipper looks for new records every POLL_SECONDS, IDLE_POLL_SECONDS when there
        # were none for a while (the caller's path never signals it: that would cost every
        # decision a lock); close() wakes it at once.
        self.wake = threading.Event()
        self._draining = threading.Event()
        self._stopped = threading.Event()
        self._call: Any = None
        self.shipped = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="proctor-local-shipper",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Ship what is left for up to `timeout` seconds, then stop; True if all was acked."""
        self._draining.set()
        self.wake.set()
        self._thread.join(timeout)
        self._stopped.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(5.0)
        self.packer.close()
        done = not self.own.pending
        for spool in self.orphans:
            spool.close(remove=False)
        return done

    def _run(self) -> None:
        rng = random.Random()
        attempt = 0
        while not self._stopped.is_set():
            try:
                if self._session():
                    return
                attempt = 0
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                self.last_error = f"{code.name}: {e.details() if hasattr(e, 'details') else e}"
                log.debug("shipping local decisions: %s", self.last_error)
            except StopIteration:
                self.last_error = "the server ended IngestDecisions"
            attempt += 1
            self._stopped.wait(rng.uniform(0, min(2.0, 0.05 * 2 ** min(attempt, 10))))

    def _session(self) -> bool:
        """One IngestDecisions stream; True once draining with nothing left to ship."""
        requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        call = self._ingest(iter(requests.get, None), metadata=self._metadata)
        self._call = call
        try:
            for spool in (*self.orphans, self.own):
                spool.rewind()
            seq = 0
            idle = 0
            # (seq, spool, position after the batch, count) of the batches sent, oldest first:
            # up to WINDOW wait for their acks while the next ones are read and sent.
            in_flight: collections.deque[tuple[int, Spool, tuple[int, int], int]] = (
                collections.deque())
            while not self._stopped.is_set():
                if len(in_flight) < WINDOW:
                    spool = self.orphans[0] if self.orphans else self.own
                    span = spool.unsent()
                    if span is not None:
                        path, offset, end = span
                        batch, taken, count = self.packer.pack(
                            path, offset, end, seq + 1, BATCH, BATCH_BYTES)
                        if count:
                            seq += 1
                            idle = 0
                            requests.put(batch)
                            in_flight.append((seq, spool, spool.sent_to(offset + taken), count))
                            continue
                    if not in_flight:
                        if spool is not self.own:
                            self.orphans.pop(0).close(remove=True)
                            continue
                        if self._draining.is_set():
                            return True
                        idle += 1
                        self.wake.wait(POLL_SECONDS if idle < IDLE_POLLS else IDLE_POLL_SECONDS)
                        self.wake.clear()
                        continue
                ack = next(call)
                sent, spool, position, count = in_flight.popleft()
                if ack.batch_seq != sent:
                    raise grpc.RpcError(f"ack for batch {ack.batch_seq}, expected {sent}")
                spool.ack(position)
                self.shipped += count
                self.last_error = ""
            return True
        finally:
            requests.put(None)
            call.cancel()
            self._call = None
