"""A bearer token never goes in plaintext to a host off this machine (the Node rule)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proctor.client import AsyncProctorClient, ProctorClient
from proctor.client._base import check_token_transport, is_local_target, target_host


@pytest.mark.parametrize("target, host", [
    ("proctor.example:50051", "proctor.example"),
    ("dns:///proctor.example:443", "proctor.example"),
    ("[::1]:50051", "::1"),
    ("10.0.0.5:50051", "10.0.0.5"),
    ("unix:/run/proctor.sock", None),
])
def test_target_host(target: str, host: str | None) -> None:
    assert target_host(target) == host


@pytest.mark.parametrize("target", [
    "127.0.0.1:50051", "127.4.5.6:1", "localhost:50051", "LOCALHOST:1", "[::1]:50051",
    "dns:///localhost:50051", "unix:/run/proctor.sock",
])
def test_loopback_targets_are_local(target: str) -> None:
    assert is_local_target(target)
    check_token_transport(target, (("authorization", "Bearer t"),), secure=False)


ALLOWED: list[tuple[str, dict[str, Any]]] = [
    ("proctor.example:50051", {}),  # no token
    ("127.0.0.1:50051", {"token": "secret"}),
    ("localhost:50051", {"token": "secret"}),
    ("[::1]:50051", {"token": "secret"}),
    ("proctor.example:50051", {"token": "secret", "allow_insecure_token": True}),
]
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("proctor.example:50051", {"token": "secret"}, r"proctor\.example.*TLS files"),
    ("10.0.0.5:50051", {"metadata": [("authorization", "Bearer secret")]}, r"10\.0\.0\.5"),
]


def test_sync_client_refuses_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCTOR_TOKEN", raising=False)
    for target, kwargs, message in REFUSED:
        with pytest.raises(ValueError, match=message):
            ProctorClient(target, **kwargs)
    # Allowed cases construct (no connection is made until the first call).
    for target, kwargs in ALLOWED:
        ProctorClient(target, **kwargs).close()


def test_async_client_refuses_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCTOR_TOKEN", raising=False)

    async def main() -> None:
        for target, kwargs, message in REFUSED:
            with pytest.raises(ValueError, match=message):
                AsyncProctorClient(target, **kwargs)
        for target, kwargs in ALLOWED:
            await AsyncProctorClient(target, **kwargs).close()

    asyncio.run(main())


def test_the_message_never_echoes_the_token() -> None:
    with pytest.raises(ValueError) as info:
        ProctorClient("proctor.example:50051", token="s3cr3t-value")
    assert "s3cr3t-value" not in str(info.value)
