"""Local evaluation: decide allow and deny in process, with the server's policy and audit.

`ProctorClient(target, local=True)` (and AsyncProctorClient) builds one LocalEvaluator:

- a watcher thread holds Admin.WatchPolicy open: the serving policy's text and
  version now, again after every reload, heartbeats between. Each new text is
  compiled with proctor.engine (the `local` extra) and swapped in atomically;
- `decide()` runs on the caller's path: validate the request as the server does,
  evaluate, write the decision through to the spool (proctor.client.spool) and
  answer. It returns None, and the client asks the server instead, for anything
  the server must decide: require_approval, a presented approval_id, the first
  call for each tenant and acting agent (the server authorizes the caller), no policy
  yet, a policy older than `max_staleness` seconds without word from the server,
  or a spool at its bound;
- a shipper thread (proctor.client.shipper) sends every spooled decision to
  Audit.IngestDecisions, where it becomes an ordinary decision event with
  "source": "local", chained by the server; a child process of the client
  (proctor.client.packer) turns the records into messages, off the GIL the
  caller needs.

Budget calls never go through here. A server run with --local-evaluation off
refuses WatchPolicy: the client then decides everything remotely.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from proctor.v1 import admin_pb2, admin_pb2_grpc

from .delegation import delegation_path as delegation_path_now
from .errors import InvalidRequestError
from .results import DecisionResult, EvaluationRequest, local_result
from .shipper import Shipper
from .spool import DEFAULT_MAX_BYTES, adopt_orphans, default_root, key_of, open_spool

try:
    from proctor import engine
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError(
        "local evaluation needs proctor.engine: pip install 'proctor-client[local]'"
    ) from e

log = logging.getLogger("proctor.client.local")
DEFAULT_MAX_STALENESS = 30.0
_CODES = {"allow": 1, "deny": 2}
_NEVER = float("-inf")
# Bound once: a module attribute lookup per call is a measurable part of a local decision.
_monotonic = time.monotonic
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns
_Request = engine.Request
_RequestError = engine.RequestError


class LocalEvaluator:
    """The policy, the spool and the shipper of one local client (thread-safe)."""

    def __init__(
        self,
        channel: grpc.Channel,
        target: str,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        max_staleness: float = DEFAULT_MAX_STALENESS,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_staleness <= 0:
            raise ValueError("max_staleness must be positive")
        self._channel = channel
        self._metadata = tuple(metadata)
        self._max_staleness = max_staleness
        self.policy: engine.CompiledPolicy | None = None
        self.policy_text = ""
        self.heard = _NEVER  # time.monotonic() of the last word from WatchPolicy
        self._fresh_until = _NEVER  # heard + max_staleness: decide locally until then
        # (tenant, acting agent) pairs the server has answered for this client: only those
        # are decided here (see `vouch`).
        self._vouched: set[tuple[str, str]] = set()
        self.refused = ""  # why the server refused WatchPolicy (local evaluation off)
        self.local_decisions = 0
        self._changed = threading.Condition()
        self._closed = threading.Event()
        self._watch_call: Any = None
        self._ids = itertools.count(1)
        self._id_prefix = "local-" + secrets.token_hex(10) + "-"
        root = Path(spool_dir) if spool_dir is not None else default_root()
        key = key_of(target)
        orphans = adopt_orphans(root, key)
        self.spool = open_spool(root, key, max_spool_bytes)
        self._append = self.spool.append
        self.shipper = Shipper(channel, self._metadata, self.spool, orphans)
        self._watcher = threading.Thread(target=self._watch, name="proctor-local-watch",
                                         daemon=True)
        self._watcher.start()

    # -- the caller's path ----------------------------------------------------------

    def decide(
        self,
        topic: str | EvaluationRequest,
        delegation_path: Sequence[str],
        risk_tags: Sequence[str],
        tenant: str,
        run_id: str,
        request_id: str,
        labels: Mapping[str, str] | None,
        approval_id: str,
        explain: bool,
    ) -> DecisionResult | None:
        """The local answer, or None when the server must decide (see the module doc).

        Raises InvalidRequestError exactly where the server would answer INVALID_ARGUMENT.
        """
        policy = self.policy
        if policy is None or _monotonic() > self._fresh_until:
            return None
        started = _perf_ns()
        if type(topic) is not str and isinstance(topic, EvaluationRequest):
            r = topic
            topic, delegation_path, risk_tags, tenant, run_id, request_id = (
                r.topic, r.delegation_path, r.risk_tags, r.tenant, r.run_id, r.request_id)
            labels, approval_id, explain = r.labels, r.approval_id, r.explain
        if approval_id:
            return None
        if not delegation_path or (type(delegation_path) is not list
                                   and type(delegation_path) is not tuple):
            delegation_path = _path(delegation_path)
        try:
            req = _Request(topic, risk_tags, delegation_path, tenant, run_id, request_id,
                           labels)
        except _RequestError as e:
            raise InvalidRequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e),
                                      "Evaluate") from None
        path = req.delegation_path
        tenant = req.tenant
        if (tenant, path[-1]) not in self._vouched:
            return None  # the server first: it checks this caller may act as them
        d = policy.evaluate(req, explain)
        decision = d.decision
        code = _CODES.get(decision)
        if code is None:
            return None  # require_approval: the server creates the approval
        decision_id = f"{self._id_prefix}{next(self._ids):x}"
        rule_id, reason, version, derived = d.rule_id, d.reason, d.policy_version, d.derived_tags
        # The whole record is written through before the answer (a killed client's
        # decisions are all in its spool), so no decision goes unshipped.
        if not self._append((
            req.topic, path, req.risk_tags, tenant, req.run_id, req.request_id,
            req.labels or None, code, rule_id, reason, version, decision_id, derived,
            _time_ns(), (_perf_ns() - started) // 1000,
        )):
            return None  # the spool is at its bound: no local decision without its evidence
        self.local_decisions += 1
        return local_result(decision, rule_id, reason, version, decision_id,
                            d.matched_rule_ids, derived)

    def vouch(self, tenant: str, delegation_path: Sequence[str]) -> None:
        """The server answered a call of this tenant and acting agent (the client calls this
        after every remote answer): it authorized this caller to act as them, so later
        decisions for them may be made here. A server with callers (DESIGN section 12)
        refuses a tenant or agent the caller may not act as with PERMISSION_DENIED, and
        so would refuse to record a local decision for it; the first call of each pair
        therefore goes to the server. The pairs are forgotten when a new WatchPolicy
        stream opens (a restarted server may know its callers differently)."""
        if delegation_path:
            self._vouched.add((tenant, delegation_path[-1]))

    # -- state ----------------------------------------------------------------------

    @property
    def max_staleness(self) -> float:
        """Seconds a policy is used without word from the server."""
        return self._max_staleness

    @max_staleness.setter
    def max_staleness(self, seconds: float) -> None:
        self._max_staleness = seconds
        self._fresh_until = self.heard + seconds

    @property
    def policy_version(self) -> str:
        policy = self.policy
        return policy.policy_version if policy is not None else ""

    def wait_for_policy(self, timeout: float, version: str = "") -> bool:
        """Block until a policy (`version`, when given) is in place to decide locally."""
        def ready() -> bool:
            return self.policy is not None and version in ("", self.policy.policy_version)

        with self._changed:
            return self._changed.wait_for(ready, timeout)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop deciding, ship what the spool holds for up to `timeout` seconds, stop.

        True when every local decision was acknowledged; otherwise what is left stays
        in the spool and the next local client on the same spool_dir ships it.
        """
        if self._closed.is_set():
            return not self.spool.pending
        self._closed.set()
        self.policy = None
        call = self._watch_call
        if call is not None:
            call.cancel()
        done = self.shipper.close(timeout)
        self.spool.close(remove=done)
        self._watcher.join(5.0)
        return done

    # -- the watcher thread ---------------------------------------------------------

    def _watch(self) -> None:
        stub = admin_pb2_grpc.AdminStub(self._channel)
        beat = max(1, min(5, int(self.max_staleness / 3)))
        attempt = 0
        while not self._closed.is_set():
            try:
                call = stub.WatchPolicy(admin_pb2.WatchPolicyRequest(heartbeat_seconds=beat),
                                        metadata=self._metadata)
                self._watch_call = call
                first = True
                for snapshot in call:
                    if first:
                        self._vouched = set()
                        first = False
                    attempt = 0
                    self._take(snapshot)
            except grpc.RpcError as e:
                if self._closed.is_set():
                    return
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                if code in (grpc.StatusCode.FAILED_PRECONDITION,
                            grpc.StatusCode.UNIMPLEMENTED):
                    self._refuse(f"{code.name}: {e.details()}")
            attempt += 1
            wait = self.max_staleness if self.refused else min(2.0, 0.05 * 2 ** min(attempt, 6))
            self._closed.wait(wait)

    def _take(self, snapshot: admin_pb2.PolicySnapshot) -> None:
        if snapshot.text and (snapshot.text != self.policy_text or self.policy is None):
            try:
                policy = engine.compile_policy(snapshot.text, snapshot.source or "<server>")
            except engine.PolicyError as e:
                # The server serves it, so this engine is out of step with the server's.
                log.warning("cannot compile the server's policy %s locally, deciding "
                            "remotely: %s", snapshot.policy_version, e)
                policy = None
            with self._changed:
                self.policy = None if self._closed.is_set() else policy
                self.policy_text = snapshot.text
                self.refused = ""
                self._changed.notify_all()
        self.heard = now = time.monotonic()
        self._fresh_until = now + self.max_staleness

    def _refuse(self, why: str) -> None:
        if not self.refused:
            log.warning("the server refuses WatchPolicy, deciding remotely: %s", why)
        with self._changed:
            self.refused = why
            self.policy = None
            self.policy_text = ""


def _path(delegation_path: Iterable[str]) -> tuple[str, ...]:
    path = tuple(delegation_path)
    return path if path else delegation_path_now()
