"""Fixtures for the service tests: a real `proctor serve` per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.client import ProctorClient
from tests.support.proctor import ProctorProcess, start_proctor

ROOT = Path(__file__).resolve().parents[2]
SEED_POLICY = ROOT / "examples" / "safety.yaml"


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    """One server on the seed policy, with metrics, shared by a module's tests."""
    server = start_proctor(SEED_POLICY, tmp_path_factory.mktemp("proctor"), metrics=True)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, server.log()


@pytest.fixture(scope="module")
def client(seed_server: ProctorProcess) -> Iterator[ProctorClient]:
    with ProctorClient(seed_server.address, timeout=5.0) as c:
        yield c
