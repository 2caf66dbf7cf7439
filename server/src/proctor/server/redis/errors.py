"""What the Redis layer raises: one error for "Redis cannot serve this call now", one for a
script that failed. The stores turn both into their own StoreUnavailable (fail closed)."""

from __future__ import annotations

# Error replies that mean "not now" (a node loading its data, a cluster reconfiguring, a
# replica that cannot write, a busy script, memory full), not a bug in the call.
TRANSIENT_REPLIES = ("LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "READONLY", "BUSY",
                     "OOM", "NOREPLICAS", "MISCONF")


class RedisUnavailable(Exception):
    """Redis did not answer within the bound, cannot be reached, answered "not now", or was
    refused by the durability check (`.message` says which; safe to show a caller)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VolatileRedis(RedisUnavailable):
    """Redis would forget budgets and approvals (no persistence, or eviction on) and no flag
    allows it; the message says what to set."""


class ScriptError(RedisUnavailable):
    """A script answered an error reply (a bug, or keys of the wrong type in Proctor's
    namespace): the call did nothing it could vouch for, so the stores fail closed."""
