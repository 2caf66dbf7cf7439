"""Certificates and JWT keys made at test time with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

_PEM = serialization.Encoding.PEM


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> bytes:
    return bytes(key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


@dataclass
class Pki:
    dir: Path
    ca_key: Any
    ca_cert: x509.Certificate

    @classmethod
    def make(cls, d: Path) -> Pki:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proctor-test-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        d.mkdir(parents=True, exist_ok=True)
        (d / "ca.pem").write_bytes(cert.public_bytes(_PEM))
        pki = cls(d, key, cert)
        pki.issue("server", cn="localhost", dns=["localhost"], ip=["127.0.0.1"])
        return pki

    def issue(self, name: str, *, cn: str, uri: str = "", dns: list[str] | None = None,
              ip: list[str] | None = None) -> tuple[Path, Path]:
        """name.pem and name.key, signed by the CA."""
        key = _key()
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns or ()]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip or ()]
        if uri:
            sans.append(x509.UniformResourceIdentifier(uri))
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(self.ca_cert.subject).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(minutes=5))
             .not_valid_after(now + dt.timedelta(days=1)))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.ca_key, hashes.SHA256())
        (self.dir / f"{name}.pem").write_bytes(cert.public_bytes(_PEM))
        (self.dir / f"{name}.key").write_bytes(_key_pem(key))
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


@dataclass
class SigningKey:
    kid: str
    private: Any
    alg: str

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")

    def jwk(self) -> dict[str, Any]:
        algo = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else \
            jwt.algorithms.ECAlgorithm
        out: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        out.update(kid=self.kid, use="sig", alg=self.alg)
        return out

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg,
                          headers={"kid": self.kid, **header})


def write_jwks(path: Path, *keys: SigningKey) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [k.jwk() for k in keys]}))
    tmp.replace(path)
