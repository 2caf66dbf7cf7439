"""Approval webhooks: a signed JSON POST to every --approval-webhook URL when an approval is
created, resolved (approved or denied) or expires.

The ApprovalFeed listener only puts the step on a bounded queue; a background
task delivers, so a slow or dead receiver never slows a decision. Each delivery
is retried with exponential backoff (RETRY_BASE_SECONDS doubling, at most
MAX_ATTEMPTS tries) on a connection error, a timeout, 429 or any 5xx; another
4xx is final. Past QUEUE_SIZE waiting deliveries new ones are dropped (counted
and logged), never blocking.

A request's body (JSON):

    {"event": "approval.created" | "approval.resolved" | "approval.expired",
     "delivery_id": "...", "timestamp": 1765000000, "url": "<the approval's page>",
     "approval": {<the approval's envelope, as GET /api/v1/approvals/{id}>},
     "text": "<Slack-compatible text>"}

Headers: `X-Proctor-Timestamp` (the body's timestamp, Unix seconds) and
`X-Proctor-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`,
the secret read from --approval-webhook-secret-file (or the environment's
PROCTOR_APPROVAL_WEBHOOK_SECRET). The secret is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from . import metrics
from .store import Approval

log = logging.getLogger("proctor.approvals.webhooks")

SECRET_ENV = "PROCTOR_APPROVAL_WEBHOOK_SECRET"
QUEUE_SIZE = 10_000
MAX_ATTEMPTS = 6
RETRY_BASE_SECONDS = 0.5
TIMEOUT_SECONDS = 5.0
CONCURRENCY = 4
EVENTS = {"created": "approval.created", "approved": "approval.resolved",
          "denied": "approval.resolved", "expired": "approval.expired"}


def sign(secret: bytes, body: bytes) -> str:
    """The X-Proctor-Signature value of `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _slack(text: str) -> str:
    """Slack's three control characters, escaped: agents' text stays text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(op: str, a: Approval, url: str) -> str:
    d = a.draft
    path = " → ".join(d.delegation_path) or "(no agent)"
    what = f"`{_slack(d.topic)}` by {_slack(path)} (tenant {_slack(d.tenant or '-')})"
    if op == "created":
        head = f"Approval needed: {what}"
        tail = f"Rule {_slack(d.rule_id)}: {_slack(d.reason)}"
    elif op == "expired":
        head = f"Approval expired unanswered: {what}"
        tail = f"Rule {_slack(d.rule_id)}"
    else:
        head = f"Approval {op} by {_slack(a.reviewer)}: {what}"
        tail = f"Reason: {_slack(a.resolution_reason)}" if a.resolution_reason else ""
    link = f" <{url}|{a.approval_id}>" if url else f" {a.approval_id}"
    return "\n".join(x for x in (head + link, tail) if x)


@dataclass(frozen=True, slots=True)
class Delivery:
    url: str
    body: bytes
    timestamp: int
    delivery_id: str


class Webhooks:
    """Delivers approval steps to the configured URLs, off the request path."""

    def __init__(self, urls: tuple[str, ...], secret: bytes, inbox_url: str = "", *,
                 retry_base: float = RETRY_BASE_SECONDS, max_attempts: int = MAX_ATTEMPTS,
                 timeout: float = TIMEOUT_SECONDS) -> None:
        self.urls = urls
        self._secret = secret
        self.inbox_url = inbox_url.rstrip("/")
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self._timeout = timeout
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(QUEUE_SIZE)
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:  # never the secret
        return f"Webhooks({len(self.urls)} urls)"

    def body(self, op: str, a: Approval, timestamp: int) -> dict[str, Any]:
        from ..inbox.views import approval_data

        url = f"{self.inbox_url}/approvals/{a.approval_id}" if self.inbox_url else ""
        data = approval_data(a)
        data["url"] = url
        return {"event": EVENTS.get(op, f"approval.{op}"), "op": op,
                "delivery_id": "", "timestamp": timestamp, "url": url, "approval": data,
                "text": slack_text(op, a, url)}

    def on_step(self, op: str, a: Approval) -> None:
        """The ApprovalFeed listener: queue one delivery per URL, never wait."""
        if op not in EVENTS:
            return
        now = int(time.time())
        payload = self.body(op, a, now)
        for url in self.urls:
            payload["delivery_id"] = secrets.token_hex(12)
            raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
            try:
                self._queue.put_nowait(Delivery(url, raw, now, payload["delivery_id"]))
            except asyncio.QueueFull:
                metrics.WEBHOOKS.labels("dropped").inc()
                log.error("approval webhook to %s dropped: %d deliveries are waiting", url,
                          QUEUE_SIZE)

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work()) for _ in range(CONCURRENCY)]

    async def close(self, grace: float = 2.0) -> None:
        """Let waiting deliveries go out for up to `grace` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self.deliver(item)
            except Exception:  # a bug here must not end the worker
                log.exception("approval webhook to %s failed", item.url)
            finally:
                self._queue.task_done()

    async def deliver(self, item: Delivery) -> bool:
        """POST with retries; True once the receiver answered 2xx."""
        assert self._client is not None
        headers = {
            "content-type": "application/json",
            "user-agent": "proctor-approval-webhook",
            "x-proctor-timestamp": str(item.timestamp),
            "x-proctor-signature": sign(self._secret, item.body),
            "x-proctor-delivery": item.delivery_id,
        }
        why = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                r = await self._client.post(item.url, content=item.body, headers=headers)
            except httpx.HTTPError as e:
                why = f"{type(e).__name__}: {e}"
            else:
                if 200 <= r.status_code < 300:
                    metrics.WEBHOOKS.labels("delivered").inc()
                    return True
                why = f"HTTP {r.status_code}"
                if r.status_code < 500 and r.status_code != 429:
                    break
            if attempt < self.max_attempts:
                metrics.WEBHOOKS.labels("retried").inc()
                await asyncio.sleep(self.retry_base * 2 ** (attempt - 1))
        metrics.WEBHOOKS.labels("failed").inc()
        log.warning("approval webhook to %s not delivered (%s): delivery %s", item.url, why,
                    item.delivery_id)
        return False


def read_secret(path: str, env: dict[str, str]) -> bytes:
    """The signing secret: the file's content (surrounding whitespace stripped), else the
    environment's PROCTOR_APPROVAL_WEBHOOK_SECRET; ValueError when neither gives one."""
    if path:
        with open(path, "rb") as f:
            secret = f.read().strip()
        if not secret:
            raise ValueError(f"--approval-webhook-secret-file {path} is empty")
        return secret
    value = env.get(SECRET_ENV, "").strip()
    if not value:
        raise ValueError(f"--approval-webhook needs --approval-webhook-secret-file or "
                         f"{SECRET_ENV}: every delivery is signed")
    return value.encode()
