"""The two errors the engine raises: a bad policy and a bad request."""

from __future__ import annotations


class PolicyError(Exception):
    """A policy that cannot be loaded: names the file, the line and the rule.

    ``str(e)`` is ``FILE:LINE: rule 'ID': MESSAGE``; parts that are unknown are
    left out (``FILE: MESSAGE`` for an error that belongs to no line).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "<string>",
        line: int | None = None,
        rule_id: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.rule_id = rule_id
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        rule = "" if self.rule_id is None else f" rule '{self.rule_id}':"
        return f"{where}:{rule} {self.message}"

    def __str__(self) -> str:
        return self._render()


class RequestError(ValueError):
    """A request outside the limits of DESIGN section 2: names the field and the limit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")
