"""Fixtures for the client tests: one real server on the seed policy per module."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.proctor import ProctorProcess, start_proctor

SEED_POLICY = Path(__file__).resolve().parents[2] / "examples" / "safety.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProctorProcess]:
    s = start_proctor(SEED_POLICY, tmp_path_factory.mktemp("proctor"))
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


@pytest.fixture
def dead_address() -> str:
    """A loopback port nothing listens on: connections are refused."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts TCP connections and never speaks HTTP/2: calls hit their deadline."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"127.0.0.1:{s.getsockname()[1]}"
