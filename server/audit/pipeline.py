"""The audit pipeline seen by the request path (filled in by the audit work)."""

from __future__ import annotations

from typing import Any


class NullAudit:
    """Records nothing: for unit tests and while no sink is configured."""

    async def record(self, kind: str, fields: dict[str, Any]) -> None:
        del kind, fields

    async def close(self) -> None:
        return None
