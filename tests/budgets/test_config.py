"""Choosing the store from settings, and the Redis URL forms."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from proctor.server.budgets import build_budget_store
from proctor.server.budgets.memory import MemoryBudgetStore
from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.store import check_fleet
from proctor.server.redis import RedisPyDriver, RespClient, open_driver, parse_redis_url


@dataclass
class FakeSettings:
    redis_url: str = ""


@pytest.mark.parametrize("url,want", [
    ("redis://127.0.0.1:7000/0", ("redis://127.0.0.1:7000/0", False)),
    ("redis://127.0.0.1:7000/0?cluster=1", ("redis://127.0.0.1:7000/0", True)),
    ("redis://h:1/0?cluster=yes&ssl_cert_reqs=none",
     ("redis://h:1/0?ssl_cert_reqs=none", True)),
    ("redis://h:1/0?cluster=0", ("redis://h:1/0", False)),
    ("redis+cluster://h:1", ("redis://h:1", True)),
    ("rediss+cluster://h:1/0", ("rediss://h:1/0", True)),
    ("unix:///run/redis.sock?db=2", ("unix:///run/redis.sock?db=2", False)),
])
def test_redis_url_forms(url: str, want: tuple[str, bool]) -> None:
    got = parse_redis_url(url)
    assert (got.url, got.cluster) == want


@pytest.mark.parametrize("url", ["http://h:1/0", "unix+cluster:///tmp/r.sock", "h:6379"])
def test_urls_that_are_not_redis_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="(?i)redis"):
        parse_redis_url(url)


def test_the_driver_follows_the_url() -> None:
    for url in ("redis://127.0.0.1:7000/2", "unix:///tmp/r.sock?db=1"):
        assert isinstance(open_driver(parse_redis_url(url)), RespClient)
    for url in ("rediss://127.0.0.1:7000/0", "redis://127.0.0.1:7000/0?cluster=1",
                "redis://127.0.0.1:7000/0?health_check_interval=5"):  # redis-py's options
        driver = open_driver(parse_redis_url(url))
        assert isinstance(driver, RedisPyDriver)
    assert open_driver(parse_redis_url("redis://h:1/0?cluster=1")).name == "redis-py-cluster"
    assert parse_redis_url("redis://:s3cret@h:1/0").redacted() == "redis://:***@h:1/0"
    with pytest.raises(ValueError):
        RespClient("rediss://127.0.0.1:7000/0")


def test_store_follows_settings() -> None:
    async def main() -> None:
        embedded = build_budget_store(FakeSettings())
        assert isinstance(embedded, MemoryBudgetStore)
        remote = build_budget_store(FakeSettings("redis://127.0.0.1:1/0"))
        assert isinstance(remote, RedisBudgetStore) and remote.prefix == "proctor:{default}:"
        await remote.close()

    asyncio.run(main())


@pytest.mark.parametrize("name", ["", "a{b", "a}b", "x" * 65])
def test_fleet_names_that_would_break_the_hash_tag_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_fleet(name)
