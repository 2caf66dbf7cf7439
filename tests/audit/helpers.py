"""Shared helpers of the audit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from proctor.server.audit.sink import Sealed, SinkCaps

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def decision(i: int, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "request_id": f"req-{i}",
        "run_id": "run-1",
        "tenant": "acme" if i % 2 else "globex",
        "delegation_path": ["planner", "etl-1"],
        "topic": f"job.{i}.read.customer-data",
        "risk_tags": ["pii"],
        "derived_tags": [],
        "labels": {"env": "prod"},
        "outcome": "allow",
        "rule_id": "r1",
        "reason": "ok",
        "policy_version": "v1",
        "decision_id": f"d-{i}",
        "approval_id": "",
        "latency_us": 12,
    }
    fields.update(extra)
    return fields


class MemorySink:
    """Keeps sealed lines; can be stalled (write waits on `gate`) or made to fail."""

    name = "memory"
    caps = SinkCaps(durable=True, resumable=False)

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.batches = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.fail_next = 0
        self.failing: Exception | None = None  # fail every write while set

    async def resume(self, writer: str) -> tuple[int, str] | None:
        return None

    async def write(self, batch: list[Sealed]) -> None:
        self.entered.set()
        await self.gate.wait()
        if self.failing is not None:
            raise self.failing
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("injected sink failure")
        self.lines.extend(s.line for s in batch)
        self.batches += 1

    async def close(self) -> None:
        self.gate.set()
