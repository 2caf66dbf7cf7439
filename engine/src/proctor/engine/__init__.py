"""Proctor policy engine: pure, no I/O but reading a policy file.

policy = engine.load_policy("examples/safety.yaml")
decision = policy.evaluate(engine.Request(topic="job.7.export.bulk",
                                          risk_tags=["bulk-data"],
                                          delegation_path=["planner", "etl-1"]))
"""

from __future__ import annotations

import gc
import os

from proctor.engine.errors import PolicyError, RequestError
from proctor.engine.evaluate import CompiledPolicy
from proctor.engine.loader import parse_policy
from proctor.engine.model import Budget, Decision, DeriveTags, Match, Policy, Rule
from proctor.engine.request import Request

__all__ = [
    "Budget",
    "CompiledPolicy",
    "Decision",
    "DeriveTags",
    "Match",
    "Policy",
    "PolicyError",
    "Request",
    "RequestError",
    "Rule",
    "compile_policy",
    "load_policy",
]


def compile_policy(text: str, source: str = "<string>", *, cache_size: int = 0) -> CompiledPolicy:
    """Validate and compile policy text; raise PolicyError naming source, line and rule."""
    # Loading a large policy allocates millions of objects that all survive; the
    # cyclic collector would rescan them again and again (several times the
    # load itself at 100,000 rules), so it is paused while loading and compiling.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return CompiledPolicy(parse_policy(text, source), cache_size=cache_size)
    finally:
        if was_enabled:
            gc.enable()


def load_policy(path: str | os.PathLike[str], *, cache_size: int = 0) -> CompiledPolicy:
    """Read a policy file (UTF-8) and compile it; raise PolicyError on any problem."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy: {exc.strerror or exc}", file=source) from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"the policy is not UTF-8 text: {exc.reason}", file=source) from None
    return compile_policy(text, source, cache_size=cache_size)
