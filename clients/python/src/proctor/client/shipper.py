"""The shipper: local decisions from the spool to Audit.IngestDecisions, in order, acknowledged.

One daemon thread per local client. It reads the spools (first those a dead client
left, then its own) in batches and sends them on one IngestDecisions stream, up to
WINDOW batches ahead of the acks; a batch is forgotten (Spool.ack) only once the
server acknowledged it. When the
stream breaks (server restart, network), it reconnects with backoff and sends again
from the first unacknowledged record; the server records a replayed decision_id once.
Nothing here is on the caller's path.
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

from proctor.v1 import audit_pb2, audit_pb2_grpc, decisions_pb2

from .spool import Spool

log = logging.getLogger("proctor.client.local")
# Decisions per IngestBatch (the server takes up to 1,000), and their spooled bytes: a batch
# stays well inside the 1 MiB message limit whatever the requests carry.
BATCH = 1000
BATCH_BYTES = 512 << 10
# Batches sent and not yet acknowledged.
WINDOW = 4
POLL_SECONDS = 0.005


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


class Shipper:
    """Ships `own` (and the adopted `orphans` first) until closed."""

    def __init__(self, channel: grpc.Channel, metadata: Sequence[tuple[str, str]],
                 own: Spool, orphans: Sequence[Spool] = ()) -> None:
        self._stub = audit_pb2_grpc.AuditStub(channel)
        self._metadata = tuple(metadata)
        self.own = own
        self.orphans = list(orphans)
        # The shipper looks for new records every POLL_SECONDS (the caller's path never
        # signals it: that would cost every decision a lock); close() wakes it at once.
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
        call = self._stub.IngestDecisions(iter(requests.get, None), metadata=self._metadata)
        self._call = call
        try:
            for spool in (*self.orphans, self.own):
                spool.rewind()
            seq = 0
            # (seq, spool, position after the batch, count) of the batches sent, oldest first:
            # up to WINDOW wait for their acks while the next ones are read and sent.
            in_flight: collections.deque[tuple[int, Spool, tuple[int, int], int]] = (
                collections.deque())
            while not self._stopped.is_set():
                if len(in_flight) < WINDOW:
                    spool = self.orphans[0] if self.orphans else self.own
                    records, position = spool.read(BATCH, BATCH_BYTES)
                    if records:
                        seq += 1
                        requests.put(audit_pb2.IngestBatch(
                            batch_seq=seq, decisions=[to_local_decision(r) for r in records]))
                        in_flight.append((seq, spool, position, len(records)))
                        continue
                    if not in_flight:
                        if spool is not self.own:
                            self.orphans.pop(0).close(remove=True)
                            continue
                        if self._draining.is_set():
                            return True
                        self.wake.wait(POLL_SECONDS)
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
