"""Retries with exponential backoff and full jitter, bounded by the call's deadline."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a call that found the server UNAVAILABLE.

    `attempts` counts the first try: 1 means no retry. The pause before retry n
    is a uniform random draw in [0, min(max_backoff, initial_backoff * multiplier**(n-1))].
    Only UNAVAILABLE is retried by default; a server that stops while a call is still
    queued in its transport answers CANCELLED, which `retry_on` may add (Evaluate is
    safe to repeat).
    """

    attempts: int = 3
    initial_backoff: float = 0.05
    max_backoff: float = 1.0
    multiplier: float = 2.0
    retry_on: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE})

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("RetryPolicy backoffs must be >= 0 and multiplier >= 1")

    def should_retry(self, code: grpc.StatusCode, attempt: int) -> bool:
        """After failed attempt number `attempt` (1-based) with `code`: try again?"""
        return attempt < self.attempts and code in self.retry_on

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause after failed attempt number `attempt` (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(0.0, cap)


NO_RETRY = RetryPolicy(attempts=1)
