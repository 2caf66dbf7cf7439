"""TLS (rediss://) behind the same Driver seam: the budget store over a real redis-server
that speaks TLS only to clients that trust its CA."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proctor.server.budgets.redis_store import RedisBudgetStore
from proctor.server.budgets.store import StoreUnavailable
from tests.support.ports import free_port, wait_port
from tests.support.redis import RedisProcess

from ..budgets.conftest import budget

TOKENS = (budget("fleet-tokens", "tokens", 100),)
OPENSSL = shutil.which("openssl")


def _certs(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it."""
    def run(*args: str) -> None:
        subprocess.run([OPENSSL or "openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
        "server.key", "-out", "server.csr")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return d / "ca.crt", d / "server.crt", d / "server.key"


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
def test_the_store_over_tls(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    ca, cert, key = _certs(tmp_path / "certs")
    tls_port = free_port()
    server = RedisProcess(port=free_port(), workdir=tmp_path / "redis", extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no")).start()
    wait_port(tls_port)

    async def main() -> Any:
        trusted = RedisBudgetStore.from_url(
            f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}", "tls")
        try:
            await trusted.start()
            r = await trusted.reserve(TOKENS, "a", "", "", "", "tokens", 5, 60)
            assert r.granted and r.budgets[0].reserved == 5
            assert (await trusted.commit("a", 3)).budgets[0].used == 3
        finally:
            await trusted.close()
        stranger = RedisBudgetStore.from_url(f"rediss://127.0.0.1:{tls_port}/0", "tls")
        try:  # the system's CAs do not know this one: refused, fail closed
            with pytest.raises(StoreUnavailable, match="(?i)certificate|ssl"):
                await stranger.start()
        finally:
            await stranger.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()
