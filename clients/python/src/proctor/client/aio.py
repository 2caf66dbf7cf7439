"""AsyncProctorClient: the asyncio client."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
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
from .approvals import AsyncApprovalsMixin, waits
from .budgets import AsyncBudgetsMixin
from .errors import ProctorError
from .results import BatchItem, DecisionResult, EvaluationRequest, batch_from_proto
from .retry import RetryPolicy
from .stream import AsyncDecisionStream

if TYPE_CHECKING:
    from .local import LocalEvaluator

T = TypeVar("T")
_UNSET: Any = object()


class AsyncProctorClient(AsyncBudgetsMixin, AsyncApprovalsMixin):
    """asyncio client for Proctor's gRPC API (grpc.aio); same behaviour as ProctorClient.

    >>> async with AsyncProctorClient("127.0.0.1:50051", fail_closed=True) as proctor:
    ...     d = await proctor.evaluate("job.7.send.email",
    ...                                delegation_path=["planner", "mailer"],
    ...                                risk_tags=["external"])
    ...     if d.decision != "allow": ...

    `timeout` is each call's overall deadline in seconds (retries included),
    overridable per call. Calls that find the server UNAVAILABLE are retried
    per `retry` with exponential backoff and jitter. With `fail_closed=True`,
    a call that still gets no answer returns a deny with rule_id
    "client.fail_closed" and a reason that says why, instead of raising;
    INVALID_ARGUMENT always raises InvalidRequestError.

    `stream=True` and `local=True` as in ProctorClient; local evaluation's watcher and
    shipper run in threads on a blocking channel of their own.
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
        channel: grpc.aio.Channel | None = None,
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
            self._channel: grpc.aio.Channel = channel
        elif credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        self._decisions = decisions_pb2_grpc.DecisionsStub(self._channel)
        # stream=True: evaluate() goes over one EvaluateStream shared by every caller.
        self._stream = AsyncDecisionStream(
            self._decisions.EvaluateStream, self.options.metadata) if stream else None
        self._evaluate: Any = self._stream or self._decisions.Evaluate
        self._rng = random.Random()
        # local=True: allow and deny decided in process (proctor.client.local). The watcher
        # and the shipper are threads on a blocking channel of their own.
        self._local: LocalEvaluator | None = None
        self._local_channel: grpc.Channel | None = None
        if local:
            from .local import LocalEvaluator

            self._local_channel = (
                grpc.secure_channel(target, credentials, options=opts)
                if credentials is not None else grpc.insecure_channel(target, options=opts))
            self._local = LocalEvaluator(
                self._local_channel, target, metadata=self.options.metadata,
                max_staleness=max_staleness, spool_dir=spool_dir,
                max_spool_bytes=max_spool_bytes)

    @property
    def channel(self) -> grpc.aio.Channel:
        return self._channel

    @property
    def local(self) -> LocalEvaluator | None:
        """The local evaluator (local=True): its policy, spool and shipper; else None."""
        return self._local

    async def wait_for_local_policy(self, timeout: float = 5.0, version: str = "") -> bool:
        """local=True: wait until the server's policy (`version`, when given) is compiled
        here and decisions can be made in process; False when `timeout` passes first."""
        local = self._local
        if local is None:
            return False
        return await asyncio.to_thread(local.wait_for_policy, timeout, version)

    async def close(self) -> None:
        if self._local is not None:
            await asyncio.to_thread(self._local.close)
            assert self._local_channel is not None
            self._local_channel.close()
        if self._stream is not None:
            await self._stream.close()
        await self._channel.close()

    async def __aenter__(self) -> AsyncProctorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the retry loop every method goes through ---------------------------------

    async def _call(
        self, method: Callable[..., Awaitable[T]], name: str, request: Any, timeout: Any
    ) -> T:
        deadline = Deadline(self.options.timeout if timeout is _UNSET else timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(
                    request, timeout=deadline.remaining(), metadata=self.options.metadata
                )
            except grpc.RpcError as e:
                error = classify(e, name)
                pause = self.options.retry.backoff(attempt, self._rng)
                if not (self.options.retry.should_retry(error.code, attempt)
                        and deadline.allows(pause)):
                    error.attempts = attempt
                    raise error from None
                await asyncio.sleep(pause)

    # -- Decisions ------------------------------------------------------------------

    async def evaluate(
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
            response: decisions_pb2.EvaluateResponse = await self._call(
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
            return await self._await_decision(result, request, wait_for_approval)
        return result

    async def evaluate_batch(
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
            response: decisions_pb2.EvaluateBatchResponse = await self._call(
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
