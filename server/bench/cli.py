"""Subcommands of this concern (placeholder: filled in by its issue)."""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    del subparsers
