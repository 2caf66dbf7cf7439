"""ProctorClient: the blocking client."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from proctor.v1 import decisions_pb2, decisions_pb2_grpc

from ._base import (
    ClientOptions,
    Deadline,
    build_batch,
    build_request,
    check_token_transport,
    classify,
    describe,
    may_fail_closed,
    tls_credentials,
)
from .approvals import ApprovalsMixin, waits
from .budgets import BudgetsMixin
from .errors import ProctorError
from .results import BatchItem, DecisionResult, EvaluationRequest, batch_from_proto
from .retry import RetryPolicy
from .stream import DecisionStream

if TYPE_CHECKING:
    from .local import LocalEvaluator

T = TypeVar("T")
_UNSET: Any = object()


class ProctorClient(BudgetsMixin, ApprovalsMixin):
    """Blocking client for Proctor's gRPC API.

    >>> with ProctorClient("127.0.0.1:50051", fail_closed=True) as proctor:
    ...     d = proctor.evaluate("job.7.send.email", delegation_path=["planner", "mailer"],
    ...                          risk_tags=["external"])
    ...     if d.decision != "allow": ...

    `timeout` is each call's overall deadline in seconds (retries included),
    overridable per call. Calls that find the server UNAVAILABLE are retried
    per `retry` with exponential backoff and jitter. With `fail_closed=True`,
    a call that still gets no answer returns a deny with rule_id
    "client.fail_closed" and a reason that says why, instead of raising;
    INVALID_ARGUMENT always raises InvalidRequestError.

    `stream=True` sends evaluate() over one EvaluateStream shared by every thread.
    `local=True` decides allow and deny in process on the server's policy and ships
    every decision to the server's audit (proctor.client.local: `max_staleness`,
    `spool_dir`, `max_spool_bytes`); needs `pip install 'proctor-client[local]'`.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = 2.0,
        retry: RetryPolicy | None = None,
        fail_closed: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Iterable[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
        stream: bool = False,
        local: bool = False,
        max_staleness: float = 30.0,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = 64 << 20,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        allow_insecure_token: bool = False,
    ) -> None:
        # Credentials (DESIGN section 12): a bearer token (token=, token_file= or
        # $PROCTOR_TOKEN) and TLS files (a CA to trust; a certificate and key for mTLS).
        credentials = credentials or tls_credentials(tls_ca, tls_cert, tls_key)
        self.options = ClientOptions(
            target, timeout=timeout, retry=retry, fail_closed=fail_closed,
            credentials=credentials, metadata=metadata, options=options,
            token=token, token_file=token_file,
        )
        if channel is None:
            check_token_transport(target, self.options.metadata, credentials is not None,
                                  allow_insecure_token)
        opts = list(self.options.channel_options)
        if channel is not None:
            self._channel: grpc.Channel = channel
        elif credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._decisions = decisions_pb2_grpc.DecisionsStub(self._channel)
        # stream=True: evaluate() goes over one EvaluateStream shared by every caller.
        self._stream = DecisionStream(
            self._decisions.EvaluateStream, self.options.metadata) if stream else None
        self._evaluate: Any = self._stream or self._decisions.Evaluate
        self._rng = random.Random()
        # local=True: allow and deny decided in process on the server's policy, every
        # decision shipped to the server's audit (proctor.client.local).
        self._local: LocalEvaluator | None = None
        if local:
            from .local import LocalEvaluator

            self._local = LocalEvaluator(
                self._channel, target, metadata=self.options.metadata,
                max_staleness=max_staleness, spool_dir=spool_dir,
                max_spool_bytes=max_spool_bytes)

    @property
    def channel(self) -> grpc.Channel:
        return self._channel

    @property
    def local(self) -> LocalEvaluator | None:
        """The local evaluator (local=True): its policy, spool and shipper; else None."""
        return self._local

    def wait_for_local_policy(self, timeout: float = 5.0, version: str = "") -> bool:
        """local=True: block until the server's policy (`version`, when given) is compiled
        here and decisions can be made in process; False when `timeout` passes first."""
        return self._local is not None and self._local.wait_for_policy(timeout, version)

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        if self._stream is not None:
            self._stream.close()
        self._channel.close()

    def __enter__(self) -> ProctorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the retry loop every method goes through ---------------------------------

    def _call(self, method: Callable[..., T], name: str, request: Any, timeout: Any) -> T:
        deadline = Deadline(self.options.timeout if timeout is _UNSET else timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(
                    request, timeout=deadline.remaining(), metadata=self.options.metadata
                )
            except grpc.RpcError as e:
                error = classify(e, name)
                pause = self.options.retry.backoff(attempt, self._rng)
                if not (self.options.retry.should_retry(error.code, attempt)
                        and deadline.allows(pause)):
                    error.attempts = attempt
                    raise error from None
                time.sleep(pause)

    # -- Decisions ------------------------------------------------------------------

    def evaluate(
        self,
        topic: str | EvaluationRequest,
        *,
        delegation_path: Sequence[str] = (),
        risk_tags: Sequence[str] = (),
        tenant: str = "",
        run_id: str = "",
        request_id: str = "",
        labels: Mapping[str, str] | None = None,
        approval_id: str = "",
        explain: bool = False,
        timeout: float | None = _UNSET,
        wait_for_approval: float | None = None,
    ) -> DecisionResult:
        """Decide one action; see the class docstring for deadlines, retries and fail-closed.

        wait_for_approval=SECONDS: on require_approval with an approval id, wait for the
        reviewer and return the final answer (see proctor.client.approvals).
        """
        if self._local is not None:
            local = self._local.decide(topic, delegation_path, risk_tags, tenant, run_id,
                                       request_id, labels, approval_id, explain)
            if local is not None:
                return local
        request = build_request(
            topic, delegation_path=delegation_path, risk_tags=risk_tags, tenant=tenant,
            run_id=run_id, request_id=request_id, labels=labels, approval_id=approval_id,
            explain=explain,
        )
        try:
            response: decisions_pb2.EvaluateResponse = self._call(
                self._evaluate, "Evaluate", request, timeout
            )
            if self._local is not None:
                self._local.vouch(request.tenant, request.delegation_path)
        except ProctorError as error:
            if may_fail_closed(error, self.options.fail_closed):
                return DecisionResult.fail_closed_deny(
                    describe(error, error.attempts)
                )
            raise
        result = DecisionResult.from_proto(response)
        if wait_for_approval is not None and waits(result, wait_for_approval):
            return self._await_decision(result, request, wait_for_approval)
        return result

    def evaluate_batch(
        self,
        requests: Iterable[EvaluationRequest | Mapping[str, Any] | decisions_pb2.EvaluateRequest],
        *,
        timeout: float | None = _UNSET,
    ) -> list[BatchItem]:
        """Decide up to 1,000 actions in one round trip; results in request order.

        An item the server refused is an ItemError in its slot. With fail_closed,
        a call that gets no answer yields a fail-closed deny for every item.
        """
        batch = build_batch(requests)
        try:
            response: decisions_pb2.EvaluateBatchResponse = self._call(
                self._decisions.EvaluateBatch, "EvaluateBatch", batch, timeout
            )
        except ProctorError as error:
            if may_fail_closed(error, self.options.fail_closed):
                deny = DecisionResult.fail_closed_deny(
                    describe(error, error.attempts)
                )
                return [deny for _ in batch.requests]
            raise
        return batch_from_proto(response)
