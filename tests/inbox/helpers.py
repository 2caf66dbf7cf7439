"""An inbox in this process on the embedded approval store, for API and page tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from proctor.server.approvals.memory import MemoryApprovalStore
from proctor.server.approvals.service import ApprovalsService
from proctor.server.approvals.store import Approval
from proctor.server.inbox import AuditSource, Reviewer, build_app, make_inbox
from proctor.server.reload import PolicyHolder
from tests.approvals.conftest import draft

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"

DANA = Reviewer(id="dana", roles=frozenset({"reviewer"}), tenants=frozenset({"acme"}),
                groups=frozenset({"gov"}))
ERIN = Reviewer(id="erin", roles=frozenset({"reviewer"}), tenants=frozenset({"globex"}),
                groups=frozenset({"gov"}))
BOT = Reviewer(id="planner-bot", roles=frozenset({"agent"}), tenants=frozenset({"acme"}))
TOKENS = {"tok-dana": DANA, "tok-erin": ERIN, "tok-bot": BOT}


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        self.events.append((kind, fields))


@dataclass
class Env:
    client: httpx.AsyncClient
    service: ApprovalsService
    audit: RecordingAudit
    steps: list[tuple[str, str]] = field(default_factory=list)

    async def create(self, **kw: Any) -> Approval:
        made = await self.service.gate._store.create(draft(**kw))
        self.service.feed.publish("created", made.approval)
        return made.approval


Scenario = Callable[[Env], Awaitable[None]]


def run(scenario: Scenario, tmp_path: Path, *, tokens: dict[str, Reviewer] | None = None,
        base_url: str = "http://inbox.test") -> None:
    """Run `scenario` against an inbox (development mode without `tokens`)."""

    async def main() -> None:
        audit = RecordingAudit()
        service = ApprovalsService(MemoryApprovalStore(), audit)
        lookup = tokens.get if tokens is not None else None
        inbox = make_inbox(service, PolicyHolder.load(str(SEED_POLICY)),
                           AuditSource(audit_dir=str(tmp_path)), lookup)
        transport = httpx.ASGITransport(app=build_app(inbox))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            env = Env(client, service, audit)
            service.feed.subscribe(lambda op, a: env.steps.append((op, a.approval_id)))
            await scenario(env)

    asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
