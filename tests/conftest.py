"""Shared fixtures. Fixtures for a concern live in that concern's test module or tests/support."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisCluster, RedisProcess, start_cluster, start_redis


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server on a free port (append-only file on), stopped by pid afterwards."""
    r = start_redis(tmp_path / "redis")
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private redis-server without persistence: a restart forgets everything."""
    r = start_redis(tmp_path / "volatile-redis", persistent=False)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def store_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A private standalone redis-server for the store suites (each test its own fleet)."""
    r = start_redis(tmp_path_factory.mktemp("store-redis"))
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster, shared by the session's tests."""
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.stop()
