"""The seams the services are built on: what they need of the serving policy and the metrics.

The services take these Protocols rather than the concrete classes so that a test, a
second process model or another metrics backend can stand in without touching them.
`reload.PolicyHolder` and `metrics.Metrics` are the implementations the server wires in.
The audit's seam is `audit.log.AuditLog`; the stores' are `budgets.store.BudgetStore` and
`approvals.store.ApprovalStore`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from proctor import engine

if TYPE_CHECKING:
    from .reload import ReloadResult


class ServingPolicy(Protocol):
    """The policy holder: the compiled policy that answers now, and how it gets replaced."""

    @property
    def current(self) -> engine.CompiledPolicy:
        """The policy serving this instant. Read it once per request: a reload swaps it
        whole, so a request decided on the value it read sees one consistent policy."""
        ...

    @property
    def loaded_at(self) -> float:
        """Unix time at which the serving policy's text last changed."""
        ...

    @property
    def last_reload_at(self) -> float:
        """Unix time of the last reload attempt, successful or not."""
        ...

    @property
    def last_reload_error(self) -> str:
        """Why the last reload failed (file and line where known), or "" after a good one."""
        ...

    async def reload(self, trigger: str) -> ReloadResult:
        """Read and compile the policy file again and swap it in if it compiles.

        Never raises: a bad file keeps the old policy serving and is reported in the
        result and in `last_reload_error`. `trigger` names the cause for logs and metrics
        ("rpc", "sighup", "watch").
        """
        ...

    def subscribe(self, callback: Callable[[engine.CompiledPolicy], None]) -> None:
        """Call `callback(new_policy)` on the event loop after every successful swap."""
        ...


class DecisionMetrics(Protocol):
    """What the Decisions service reports about each call."""

    def decided(self, outcome: str, rule_id: str) -> None:
        """Count one decision by outcome ("allow", "deny", "require_approval") and rule."""
        ...

    def observe_evaluate(self, seconds: float) -> None:
        """Record one Evaluate (or stream item) from decode to answer, in seconds."""
        ...

    def observe_batch(self, seconds: float, items: int) -> None:
        """Record one EvaluateBatch of `items` requests, in seconds."""
        ...

    def invalid(self, method: str, field: str) -> None:
        """Count a request refused as INVALID_ARGUMENT, by method and offending field."""
        ...


class ReloadMetrics(Protocol):
    """What the policy holder reports about reloads."""

    def policy_loaded(self, version: str, rules: int) -> None:
        """The serving policy is now `version`, with `rules` rules."""
        ...

    def reloaded(self, ok: bool, trigger: str) -> None:
        """Count one reload attempt by result and trigger."""
        ...
