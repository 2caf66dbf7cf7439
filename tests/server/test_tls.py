"""TLS and mTLS on `proctor serve`, with certificates made by the openssl command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest

from proctor.client import ProctorClient, ProctorError
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

from .conftest import SEED_POLICY

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem",
                 cwd=d)
    return d


def _wait_tls(server: ProctorProcess, creds: grpc.ChannelCredentials) -> None:
    def answers() -> bool:
        assert server.proc is not None and server.proc.poll() is None, server.log()
        with ProctorClient(server.address, credentials=creds, timeout=1) as c:
            c.evaluate("job.1.delegate.internal", delegation_path=["a"])
        return True

    wait_until(answers, "an Evaluate over TLS", ignore=(ProctorError,))


def test_mtls_serves_clients_with_a_certificate_only(pki: Path, tmp_path: Path) -> None:
    server = start_proctor(
        SEED_POLICY, tmp_path, "--tls-cert", str(pki / "server.pem"),
        "--tls-key", str(pki / "server.key"), "--client-ca", str(pki / "ca.pem"), wait=False,
    )
    ca = (pki / "ca.pem").read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    try:
        _wait_tls(server, with_cert)
        with ProctorClient(server.address, credentials=with_cert) as c:
            assert c.evaluate("job.1.delegate.internal", delegation_path=["a"]).allowed
        without = grpc.ssl_channel_credentials(root_certificates=ca)
        with (
            ProctorClient(server.address, credentials=without, timeout=3) as c,
            pytest.raises(ProctorError) as e,
        ):
            c.evaluate("job.1.delegate.internal", delegation_path=["a"])
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0, server.log()
