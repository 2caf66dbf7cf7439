"""Request checks and plans, shared by both budget stores (the rules are in store.py's docstring).

Each call of the BudgetStore seam is checked here before a store touches
anything (InvalidArgument naming the field), and a reservation or a GetBudget
is resolved into the counters it applies to (`Counter`, in policy order): the
budgets of its unit or id whose scope key the request gives. The names a
reservation_id and a counter are bound to (`request_key`, `counter_of`) are
built here too, so the embedded store and the Lua scripts agree on them.
"""

from __future__ import annotations

from .store import (
    MAX_AMOUNT,
    MAX_ID_CHARS,
    MAX_TTL_SECONDS,
    SCOPE_FIELD,
    BudgetDef,
    Counter,
    InvalidArgument,
)


def check_id(field: str, value: str, *, required: bool) -> None:
    if required and not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"at most {MAX_ID_CHARS} characters, got {len(value)}")


def counter_of(scope: str, scope_key: str, tenant: str) -> str:
    """The counter a scope key counts on: the fleet's one, a tenant's, or (agent, run) one
    of that tenant's, length-prefixed so no two (tenant, id) pairs share a name."""
    if scope in ("agent", "run"):
        return f"{len(tenant.encode())}:{tenant}:{scope_key}"
    return scope_key


def request_key(tenant: str, agent_id: str, run_id: str, unit: str) -> str:
    """What a reservation_id is bound to besides its amount, as one string (length-prefixed,
    so different requests never share one)."""
    return "".join(f"{len(v.encode())}:{v}" for v in (tenant, agent_id, run_id, unit))


def tenant_prefixes(tenants: tuple[str, ...]) -> tuple[str, ...]:
    """How each tenant starts a request_key: a reservation's tenant is one of `tenants`
    when its request_key starts with one of these."""
    return tuple(f"{len(t.encode())}:{t}" for t in tenants)


def exists_message(reservation_id: str, state: str = "") -> str:
    """ReservationExists' message: another request under the id, or its ended state."""
    if state:
        return (f"reservation_id {reservation_id!r} was {state}: it is not granted again; "
                "reserve with a new id")
    return (f"reservation_id {reservation_id!r} is taken by a reservation with another "
            "tenant, agent_id, run_id, unit or amount: reserve with a new id")


def _counter(b: BudgetDef, key: str, tenant: str) -> Counter:
    concurrency = b.kind == "concurrency"
    return Counter(
        budget_id=b.id,
        unit=b.unit,
        scope=b.scope,
        scope_key=key,
        kind="concurrency" if concurrency else "spend",
        limit=int(b.limit),
        window="none" if concurrency else b.window,
        window_seconds=0 if concurrency else int(b.window_seconds),
        window_spec="none" if concurrency else b.window_spec,
        key=counter_of(b.scope, key, tenant),
    )


def _scope_key(b: BudgetDef, keys: dict[str, str]) -> str | None:
    if b.scope == "fleet":
        return ""
    return keys[SCOPE_FIELD[b.scope]] or None


def check_reservation(reservation_id: str, amount: int, ttl_seconds: int) -> None:
    """The per-call fields of a reservation, for a caller that already resolved (with
    plan_reserve) the counters of its unit and scope keys."""
    check_id("reservation_id", reservation_id, required=True)
    _check_amount_ttl(amount, ttl_seconds)


def _check_amount_ttl(amount: int, ttl_seconds: int) -> None:
    if amount <= 0:
        raise InvalidArgument("amount", f"must be positive, got {amount}")
    if amount > MAX_AMOUNT:
        raise InvalidArgument("amount", f"at most {MAX_AMOUNT}, got {amount}")
    if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidArgument("ttl_seconds", f"must be 1..{MAX_TTL_SECONDS}, got {ttl_seconds}")


def plan_reserve(
    budgets: tuple[BudgetDef, ...],
    reservation_id: str,
    tenant: str,
    agent_id: str,
    run_id: str,
    unit: str,
    amount: int,
    ttl_seconds: int,
) -> tuple[Counter, ...]:
    """Validate a reservation and resolve the counters it applies to (policy order)."""
    check_id("reservation_id", reservation_id, required=True)
    check_id("tenant", tenant, required=False)
    check_id("agent_id", agent_id, required=False)
    check_id("run_id", run_id, required=False)
    check_id("unit", unit, required=True)
    _check_amount_ttl(amount, ttl_seconds)
    keys = {"tenant": tenant, "agent_id": agent_id, "run_id": run_id}
    out: list[Counter] = []
    for b in budgets:
        if b.unit != unit:
            continue
        key = _scope_key(b, keys)
        if key is None:
            field = SCOPE_FIELD[b.scope]
            raise InvalidArgument(
                field, f"must not be empty: budget {b.id!r} of unit {unit!r} has scope {b.scope}"
            )
        out.append(_counter(b, key, tenant))
    if not out:
        raise InvalidArgument("unit", f"no budget of unit {unit!r} in the serving policy")
    return tuple(out)


def plan_get(
    budgets: tuple[BudgetDef, ...], tenant: str, agent_id: str, run_id: str, budget_id: str
) -> tuple[Counter, ...]:
    """Validate a GetBudget and resolve the counters it reports (policy order)."""
    check_id("budget_id", budget_id, required=False)
    check_id("tenant", tenant, required=False)
    check_id("agent_id", agent_id, required=False)
    check_id("run_id", run_id, required=False)
    keys = {"tenant": tenant, "agent_id": agent_id, "run_id": run_id}
    if budget_id:
        for b in budgets:
            if b.id == budget_id:
                key = _scope_key(b, keys)
                if key is None:
                    field = SCOPE_FIELD[b.scope]
                    raise InvalidArgument(
                        field, f"must not be empty: budget {b.id!r} has scope {b.scope}"
                    )
                return (_counter(b, key, tenant),)
        raise InvalidArgument("budget_id", f"no budget {budget_id!r} in the serving policy")
    out = []
    for b in budgets:
        key = _scope_key(b, keys)
        if key is not None:
            out.append(_counter(b, key, tenant))
    return tuple(out)


def check_commit(reservation_id: str, actual: int) -> None:
    check_id("reservation_id", reservation_id, required=True)
    if actual < 0:
        raise InvalidArgument("actual", f"must not be negative, got {actual}")
    if actual > MAX_AMOUNT:
        raise InvalidArgument("actual", f"at most {MAX_AMOUNT}, got {actual}")


def check_release(reservation_id: str) -> None:
    check_id("reservation_id", reservation_id, required=True)
