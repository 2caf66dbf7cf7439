"""The C twins of the audit's hot paths: which serve.

`server/audit/_seal.c` and `server/audit/_xadd.c` are optional extensions
(pyproject.toml): each has its Python reference beside it and a test holding
the two to the same output (`server/audit/_offload.c`, the file sink's I/O
thread, has none: without it the sink's blocking write() serves, in the
executor). A module asks for its twin here and falls back to the Python one
when the extension was not built (no compiler at install time) or
PROCTOR_PURE_PYTHON=1 is set (to test or measure the Python path).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_PYTHON = os.environ.get("PROCTOR_PURE_PYTHON") == "1"


def twin(module: str) -> ModuleType | None:
    """The built C module `module`, or None: the caller's Python twin serves."""
    if PURE_PYTHON:
        return None
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
