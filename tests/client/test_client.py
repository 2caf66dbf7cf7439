"""The Python SDK: results, deadlines, retries and fail-closed, sync and asyncio."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import grpc
import pytest

from proctor.client import (
    FAIL_CLOSED_RULE_ID,
    NO_RETRY,
    AsyncProctorClient,
    EvaluationRequest,
    InvalidRequestError,
    ItemError,
    ProctorClient,
    ProctorUnavailableError,
    RetryPolicy,
)
from tests.support.proctor import ProctorProcess, start_proctor

from .conftest import SEED_POLICY

FAST_RETRY = RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.05)


# -- retry policy (no network) -------------------------------------------------------


def test_backoff_grows_exponentially_within_its_cap() -> None:
    policy = RetryPolicy(attempts=6, initial_backoff=0.1, max_backoff=0.5, multiplier=2.0)
    rng = random.Random(7)
    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        draws = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8  # full jitter spans the range
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 5)
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 6)
    assert not policy.should_retry(grpc.StatusCode.INVALID_ARGUMENT, 1)
    assert not NO_RETRY.should_retry(grpc.StatusCode.UNAVAILABLE, 1)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# -- against a live server -----------------------------------------------------------


def test_sync_results_are_plain_dataclasses(server: ProctorProcess) -> None:
    with ProctorClient(server.address) as c:
        d = c.evaluate(
            "job.3.export.bulk", delegation_path=["planner", "etl"],
            risk_tags=["bulk-data"], explain=True, timeout=5,
        )
        assert d.decision == "deny" and d.rule_id == "deny-bulk-export"
        assert not d.allowed and not d.fail_closed and d.ok
        assert d.matched_rule_ids == ("deny-bulk-export",)
        assert len(d.decision_id) == 26 and d.policy_version
        same = c.evaluate(EvaluationRequest("job.3.delegate.internal", delegation_path=["a"]))
        assert same.allowed


def test_async_client_evaluates_and_batches(server: ProctorProcess) -> None:
    async def main() -> None:
        async with AsyncProctorClient(server.address, fail_closed=True) as c:
            d = await c.evaluate("job.1.read.pii", delegation_path=["a"], risk_tags=["pii"])
            assert (d.decision, d.rule_id) == ("require_approval", "approve-data-access")
            many = await asyncio.gather(
                *[c.evaluate(f"job.{i}.delegate.internal", delegation_path=["a"])
                  for i in range(20)]
            )
            assert {m.decision for m in many} == {"allow"}
            results = await c.evaluate_batch(
                [EvaluationRequest("job.1.delegate.internal", delegation_path=["a"]),
                 EvaluationRequest("job..x", delegation_path=["a"])]
            )
            assert results[0].ok and isinstance(results[1], ItemError)
            assert "topic" in results[1].message
            with pytest.raises(InvalidRequestError):
                await c.evaluate("job.1.delegate.internal", delegation_path=[])

    asyncio.run(main())


def test_retries_until_the_server_comes_up(tmp_path: Path) -> None:
    from tests.support.ports import free_port

    port = free_port()
    started: list[ProctorProcess] = []
    timer = threading.Timer(
        0.3, lambda: started.append(start_proctor(SEED_POLICY, tmp_path, port=port, wait=False))
    )
    timer.start()
    retry = RetryPolicy(attempts=100, initial_backoff=0.05, max_backoff=0.2)
    try:
        with ProctorClient(f"127.0.0.1:{port}", retry=retry, timeout=20) as c:
            d = c.evaluate("job.1.delegate.internal", delegation_path=["a"])
        assert d.decision == "allow"
    finally:
        timer.join()
        for s in started:
            assert s.stop() == 0, s.log()


# -- dead and silent servers -----------------------------------------------------------


def test_unavailable_is_retried_then_raised(dead_address: str) -> None:
    with (
        ProctorClient(dead_address, retry=FAST_RETRY, timeout=5) as c,
        pytest.raises(ProctorUnavailableError) as e,
    ):
        c.evaluate("job.1.delegate.internal", delegation_path=["a"])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert e.value.attempts == 3


def test_fail_closed_turns_unavailable_into_a_deny_that_says_why(dead_address: str) -> None:
    with ProctorClient(dead_address, retry=FAST_RETRY, fail_closed=True, timeout=5) as c:
        d = c.evaluate("job.1.delegate.internal", delegation_path=["a"])
        batch = c.evaluate_batch(
            [EvaluationRequest("job.1.delegate.internal", delegation_path=["a"])] * 3
        )
    assert (d.decision, d.rule_id, d.fail_closed) == ("deny", FAIL_CLOSED_RULE_ID, True)
    assert "UNAVAILABLE after 3 attempts" in d.reason
    assert [b.decision for b in batch] == ["deny"] * 3  # type: ignore[union-attr]


def test_deadline_is_enforced_and_fails_closed(black_hole: str) -> None:
    with ProctorClient(black_hole, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(ProctorUnavailableError) as e:
            c.evaluate("job.1.delegate.internal", delegation_path=["a"])
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - t0 < 2.0
    with ProctorClient(black_hole, fail_closed=True) as c:
        d = c.evaluate("job.1.delegate.internal", delegation_path=["a"], timeout=0.2)
    assert d.rule_id == FAIL_CLOSED_RULE_ID and "DEADLINE_EXCEEDED" in d.reason


def test_async_fail_closed_against_a_dead_address(dead_address: str) -> None:
    async def main() -> None:
        async with AsyncProctorClient(dead_address, retry=FAST_RETRY, fail_closed=True) as c:
            d = await c.evaluate("job.1.delegate.internal", delegation_path=["a"])
            assert d.decision == "deny" and d.fail_closed and "UNAVAILABLE" in d.reason
        async with AsyncProctorClient(dead_address, retry=FAST_RETRY) as c:
            with pytest.raises(ProctorUnavailableError) as e:
                await c.evaluate("job.1.delegate.internal", delegation_path=["a"])
            assert e.value.attempts == 3

    asyncio.run(main())


def test_closed_client_refuses_calls(server: ProctorProcess) -> None:
    c = ProctorClient(server.address)
    with c:
        assert c.evaluate("job.1.delegate.internal", delegation_path=["a"]).allowed
    with pytest.raises(ValueError):
        c.evaluate("job.1.delegate.internal", delegation_path=["a"])
