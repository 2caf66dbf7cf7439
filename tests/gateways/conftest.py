"""Fixtures of the gateway tests: one live `proctor serve` on the tests' policy per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proctor import ProctorProcess, start_proctor

POLICY = Path(__file__).resolve().parent / "policy.yaml"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def proctor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    p = start_proctor(POLICY, tmp_path_factory.mktemp("proctor"))
    try:
        yield p
    finally:
        p.stop()
