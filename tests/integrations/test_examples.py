"""The runnable examples: each drives the seed's accountability chain against a `proctor
serve` it starts itself, and ends with the audit envelope of C's denied email."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CREWAI_SKIP_REASON, crewai_available

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("script", [
    "langgraph_chain.py", "openai_agents_chain.py",
    pytest.param("crewai_chain.py", marks=pytest.mark.skipif(
        not crewai_available(), reason=CREWAI_SKIP_REASON)),
])
def test_example_runs_the_chain_and_prints_the_envelope(script: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "delegation_path  A -> B -> C  (depth 2)" in out
    assert "action           job.42.send.email" in out
    assert "denied by dana" in out
    assert "jane: jane@example.com" in out  # B's approved read ran
