"""Who hears about approval steps in this process: the inbox's live pages and the webhooks.

`ApprovalFeed.publish(op, approval)` is called after a step is stored and
audited: `created` by the gate (on the Evaluate path), `approved` / `denied`
by the service, `expired` by the service's sweep. Listeners are plain
callables that must not block or raise: they only hand the step on (set an
event, put it on a queue). A listener that raises is logged and skipped, so a
broken listener never fails a decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .store import Approval

log = logging.getLogger("proctor.approvals")

Listener = Callable[[str, Approval], None]


class ApprovalFeed:
    """In-process fan-out of approval steps (created, approved, denied, expired)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, op: str, approval: Approval) -> None:
        for listener in list(self._listeners):
            try:
                listener(op, approval)
            except Exception:  # a listener's bug must not reach the request path
                log.exception("approval feed listener failed on %s", op)
