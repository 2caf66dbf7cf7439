"""The budget store seam: what the Budgets service asks of a store, and the rules both stores share.

A budget (engine.Budget, DESIGN section 4) is a limit on one unit, counted per
scope key (one counter for the fleet, or one per tenant, agent or run) and per
window. A reservation names a unit and an amount; it applies to every budget of
that unit, all or nothing. This module holds:

- the `BudgetStore` Protocol the embedded and the Redis store implement;
- the answers (`BudgetStatus`, `ReserveResult`, `CommitResult`, `ReleaseResult`);
- the domain errors the servicer maps to gRPC codes;
- the limits on a request's fields (`MAX_AMOUNT` ...) and the fleet name check.

Checking a request and resolving the counters it touches, shared by both stores
so that bad input is refused before anything in a store is touched, is plans.py.

Choices where DESIGN is silent (the contract tests hold both stores to them):

- A budget of scope tenant/agent/run needs its key: a reservation whose unit has
  such a budget and whose tenant/agent_id/run_id is empty is INVALID_ARGUMENT
  naming the field. An agent cannot dodge a run budget by leaving run_id out.
- A unit with no budget in the serving policy is INVALID_ARGUMENT naming `unit`:
  a typo in the unit must not turn into unlimited spend.
- A reservation touching any concurrency budget is a lease: it has no commit
  (FAILED_PRECONDITION); re-reserving the same id while it is held renews it
  (expiry = now + the new ttl) without taking a second slot. Concurrency
  counters have no window.
- A reservation_id names one request: its tenant, agent_id, run_id, unit and
  amount. The same id with the same request answers what it answered first
  (granted or refused, with the statuses of that moment) and never reserves
  twice, while the reservation is held or after it was refused; a held lease is
  renewed (expiry = now + the new ttl) without taking a second slot. The same id
  with any other tenant, agent_id, run_id, unit or amount is ReservationExists
  (ALREADY_EXISTS, naming the id): never granted without reserving, and no
  statuses of the first request's tenant are shown. An id whose reservation was
  committed, released or has expired is ReservationExists too: it is never
  granted again (use a new id). The record lives while the reservation is held
  and for 24 h after it ends (refused: TTL + 24 h); after that the id is free.
- Counters of scope agent and run are their tenant's own: the same agent_id (or
  run_id) under two tenants counts on two counters, so no answer shows, and no
  caller spends from, another tenant's budgets. scope_key still reports the
  agent or run id.
- Commit settles against the counters the reservation was made on (the window
  it was reserved in, the definitions of the policy it was reserved under); a
  window that has ended since is not touched, so a late commit never leaks
  into the next window. Committing a reservation that has expired still records
  the actual spend (the counter tells the truth). A second commit with the same
  actual returns the first answer; with another actual it is FAILED_PRECONDITION.
  Committing a released or refused reservation is FAILED_PRECONDITION.
- Release of a reservation that is no longer held (committed, released,
  expired, refused) changes nothing and reports the counters as they are.
- `amount` is 1..MAX_AMOUNT and `actual` 0..MAX_AMOUNT (10**12), INVALID_ARGUMENT
  past either: far above any real spend of one step, and far below where Lua's
  doubles stop counting exactly (2**53), so one absurd commit cannot wreck a counter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

MAX_ID_CHARS = 128
MAX_TTL_SECONDS = 86400
MAX_AMOUNT = 10**12  # amount and actual (budgets.proto states it)
RECORD_MARGIN_SECONDS = 86400  # a reservation's record outlives its end by this much
SCOPES = ("fleet", "tenant", "agent", "run")
SCOPE_FIELD = {"tenant": "tenant", "agent": "agent_id", "run": "run_id"}


# -- errors -----------------------------------------------------------------------------------


class BudgetError(Exception):
    """Base of the budget domain errors; `.message` is safe to show the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(BudgetError):
    """Bad input (gRPC INVALID_ARGUMENT); `.field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ReservationNotFound(BudgetError):
    """No reservation with that id (gRPC NOT_FOUND)."""


class ReservationExists(BudgetError):
    """The reservation_id answered another request, or its reservation ended (gRPC
    ALREADY_EXISTS); the message names the id."""


class FailedPrecondition(BudgetError):
    """The reservation is in a state that forbids the operation (gRPC FAILED_PRECONDITION)."""


class StoreUnavailable(BudgetError):
    """The store cannot be reached within its bounded timeout (gRPC UNAVAILABLE); fail closed."""


# -- budgets and answers ----------------------------------------------------------------------


class BudgetDef(Protocol):
    """The fields of engine.Budget a store reads (see docs/INTERNALS.md)."""

    @property
    def id(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def window(self) -> str: ...
    @property
    def window_seconds(self) -> int: ...
    @property
    def window_spec(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def kind(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Counter:
    """One budget resolved for one request: which counter it uses (scope key) and its rules."""

    budget_id: str
    unit: str
    scope: str
    scope_key: str
    kind: str
    limit: int
    window: str  # none | minute | hour | day | month | fixed (concurrency: always none)
    window_seconds: int
    window_spec: str
    key: str  # the counter's own name in its budget: scope_key, tenant-qualified (counter_of)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget's counter for one scope key, as the answer reports it."""

    budget_id: str
    unit: str
    scope: str
    scope_key: str
    kind: str
    limit: int
    used: int
    reserved: int
    window: str  # the window as written: none, day, 30s ...
    window_resets_at: float | None  # epoch seconds; None for window none

    @property
    def remaining(self) -> int:
        """limit - used - reserved; negative when a commit went over."""
        return self.limit - self.used - self.reserved

    @property
    def over(self) -> bool:
        """used + reserved exceeds the limit (a commit above its reservation)."""
        return self.used + self.reserved > self.limit


def status_of(c: Counter, used: int, reserved: int, window_end_ms: int) -> BudgetStatus:
    """A counter's status as an answer reports it; window_end_ms 0 for no window."""
    return BudgetStatus(
        c.budget_id, c.unit, c.scope, c.scope_key, c.kind, c.limit, used, reserved,
        c.window_spec, window_end_ms / 1000 if window_end_ms else None,
    )


@dataclass(frozen=True, slots=True)
class ReserveResult:
    granted: bool
    refused_by: str  # first refusing budget in policy order; "" when granted
    budgets: tuple[BudgetStatus, ...]
    reservation_id: str
    expires_at: float  # epoch seconds


@dataclass(frozen=True, slots=True)
class CommitResult:
    reservation_id: str
    budgets: tuple[BudgetStatus, ...]

    @property
    def over(self) -> bool:
        return any(b.over for b in self.budgets)


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    reservation_id: str
    budgets: tuple[BudgetStatus, ...]


# -- the seam ---------------------------------------------------------------------------------


@runtime_checkable
class BudgetStore(Protocol):
    """Where budget counters and reservations live: embedded (memory.py) or Redis (redis_store.py).

    Every method validates its input first (InvalidArgument, nothing touched),
    then acts atomically. StoreUnavailable when the backing store cannot be
    reached within the bounded timeout.
    """

    async def reserve(
        self,
        budgets: tuple[BudgetDef, ...],
        reservation_id: str,
        tenant: str,
        agent_id: str,
        run_id: str,
        unit: str,
        amount: int,
        ttl_seconds: int,
    ) -> ReserveResult:
        """Reserve `amount` against every budget of `unit` in `budgets` (the serving policy's,
        in policy order) whose scope applies, all or nothing.

        Granted only when each has room (used + reserved + amount <= limit for spend,
        reserved + amount <= limit for concurrency); otherwise refused_by names the
        first refusing budget and nothing is held. The reservation expires after
        `ttl_seconds` unless committed or released. The same id with the same request
        returns the first answer while held or refused (a held lease is renewed);
        ReservationExists for the id with another request, or once its reservation was
        committed, released or expired (module docstring).
        """
        ...

    async def commit(self, reservation_id: str, actual: int,
                     tenants: tuple[str, ...] | None = None) -> CommitResult:
        """Settle a spend reservation at `actual`: the reserved amount is refunded and
        `actual` is counted as used, even above the reservation (the answer is then over).
        With `tenants`, a reservation of any other tenant is ReservationNotFound.

        ReservationNotFound for an unknown id; FailedPrecondition for a lease, a
        refused or released reservation, or a second commit with another actual.
        """
        ...

    async def release(self, reservation_id: str,
                      tenants: tuple[str, ...] | None = None) -> ReleaseResult:
        """Refund a held reservation or free a lease; a no-op for one no longer held.
        With `tenants`, a reservation of any other tenant is ReservationNotFound.

        ReservationNotFound for an unknown id.
        """
        ...

    async def get(
        self,
        budgets: tuple[BudgetDef, ...],
        tenant: str,
        agent_id: str,
        run_id: str,
        budget_id: str = "",
    ) -> tuple[BudgetStatus, ...]:
        """Current counters: of `budget_id` only (InvalidArgument when the policy has no such
        budget or its scope key is missing), or of every budget whose scope key is given
        (fleet budgets always), in policy order.
        """
        ...

    async def start(self) -> None:
        """Connect and prepare (Redis: load the scripts) before serving; StoreUnavailable when
        the store cannot be reached. Optional: calls work without it, paying the setup."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; StoreUnavailable otherwise (for health)."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


# -- configuration ----------------------------------------------------------------------------


def check_fleet(fleet: str) -> str:
    """The fleet name becomes the Redis hash tag: 1..64 chars, no braces."""
    if not fleet or len(fleet) > 64 or "{" in fleet or "}" in fleet:
        raise ValueError(f"budget fleet name must be 1..64 characters without braces: {fleet!r}")
    return fleet
