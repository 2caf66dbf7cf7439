"""The optional C extensions of the hot paths, and which of them serve.

An extension (pyproject.toml) has its Python reference beside it and a test holding
the two to the same output. A module asks for its extension here and falls back to
the Python one when it was not built (no compiler at install time) or
PROCTOR_PURE_PYTHON=1 is set (to test or measure the Python path). `loaded()` names
the ones in use, for the `serving` log line.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON = os.environ.get("PROCTOR_PURE_PYTHON") == "1"
_LOADED: set[str] = set()


def twin(module: str) -> ModuleType | None:
    """The built C module `module`, or None: the caller's Python twin serves."""
    if PURE_PYTHON:
        return None
    try:
        found = importlib.import_module(module)
    except ImportError:
        return None
    _LOADED.add(module.rsplit(".", 1)[-1])
    return found


def loaded() -> list[str]:
    """The extensions in use in this process, by module name (`_wire`), sorted."""
    return sorted(_LOADED)
