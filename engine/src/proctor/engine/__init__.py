"""Proctor policy engine: pure, no I/O but reading a policy file.

policy = engine.load_policy("examples/safety.yaml")
decision = policy.evaluate(engine.Request(topic="job.7.export.bulk",
                                          risk_tags=["bulk-data"],
                                          delegation_path=["planner", "etl-1"]))
"""

from __future__ import annotations

import os
import threading

from proctor.engine.errors import PolicyError, RequestError
from proctor.engine.evaluate import CompiledPolicy
from proctor.engine.limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_BYTES,
    CompileCancelled,
    Limits,
    cancel_scope,
    read_text_file,
)
from proctor.engine.loader import parse_policy
from proctor.engine.model import Budget, Decision, DeriveTags, Match, Policy, Rule
from proctor.engine.request import Request

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BYTES",
    "Budget",
    "CompileCancelled",
    "CompiledPolicy",
    "Decision",
    "DeriveTags",
    "Limits",
    "Match",
    "Policy",
    "PolicyError",
    "Request",
    "RequestError",
    "Rule",
    "compile_policy",
    "load_policy",
    "read_text_file",
]


def compile_policy(
    text: str,
    source: str = "<string>",
    *,
    limits: Limits = DEFAULT_LIMITS,
    cancel: threading.Event | None = None,
) -> CompiledPolicy:
    """Validate and compile policy text; raise PolicyError naming source, line and rule.

    A policy past `limits` is a PolicyError. With `cancel`, setting that event from
    another thread makes the compile stop soon with CompileCancelled.

    Compiling a large policy allocates millions of objects that all survive; the
    cyclic garbage collector rescans them again and again (about doubling the
    time at 100,000 rules). The engine leaves the collector alone: a caller
    compiling large policies may pause it around this call.
    """
    with cancel_scope(cancel):
        return CompiledPolicy(parse_policy(text, source, limits))


def load_policy(
    path: str | os.PathLike[str],
    *,
    limits: Limits = DEFAULT_LIMITS,
    cancel: threading.Event | None = None,
) -> CompiledPolicy:
    """Read a policy file (a regular file of UTF-8 text, at most limits.max_bytes) and
    compile it; raise PolicyError on any problem (see read_text_file)."""
    source = os.fspath(path)
    text = read_text_file(source, max_bytes=limits.max_bytes)
    return compile_policy(text, source, limits=limits, cancel=cancel)
