"""Turn a call's credentials into a Principal, or say why not.

Credentials, in this order (DESIGN section 12):
- `authorization: Bearer <token>` metadata: a JWT (three dot-separated parts)
  when --jwt-jwks is set, verified by `jwt_verifier`; otherwise a token looked
  up by its SHA-256 in the principals file;
- an mTLS client certificate (--client-ca): its URI SANs (SPIFFE ids), then its
  subject CN, matched against the principals' `identities`. With no principals
  file, a certificate the CA signed is an admin named by its identity;
- nothing, in the development mode only: the anonymous admin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .principal import ADMIN, ANONYMOUS_ADMIN, ANY, BY_MTLS, BY_TOKEN, ROLES, Principal
from .principals import PrincipalsHolder
from .tokens import MAX_TOKEN_CHARS, digest_of, same_digest

# auth_context keys gRPC fills from a verified client certificate.
_URI_KEYS = ("peer_spiffe_id", "peer_uri", "x509_subject_alternative_name")
_CN_KEY = "x509_common_name"


class AuthFailed(Exception):
    """No credential, or one that fails: UNAUTHENTICATED. `reason` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class JwtVerifier(Protocol):
    def verify(self, token: str) -> Principal:
        """The principal a valid JWT names; raises AuthFailed."""


class Authenticator:
    """Credentials -> Principal for one server process."""

    def __init__(self, principals: PrincipalsHolder | None = None, *, mtls: bool = False,
                 jwt: JwtVerifier | None = None) -> None:
        self.principals = principals
        self.mtls = mtls
        self.jwt = jwt

    @property
    def development(self) -> bool:
        """No authentication configured: every caller is the anonymous admin."""
        return self.principals is None and not self.mtls and self.jwt is None

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None,
                     auth_context: Callable[[], dict[str, list[bytes]]] | None) -> Principal:
        if self.development:
            return ANONYMOUS_ADMIN
        header = _authorization(metadata)
        if header is not None:
            return self.bearer(header)
        if self.mtls and auth_context is not None:
            found = self.certificate(auth_context())
            if found is not None:
                return found
        raise AuthFailed("missing", "no credential: send `authorization: Bearer <token>` "
                         "metadata" + (" or a client certificate" if self.mtls else ""))

    def bearer(self, header: str) -> Principal:
        """The principal of an `authorization` value ("Bearer <token>")."""
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthFailed("malformed", "authorization: expected `Bearer <token>`")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthFailed("malformed", f"authorization: a token of at most "
                             f"{MAX_TOKEN_CHARS} characters")
        if self.jwt is not None and token.count(".") == 2:
            return self.jwt.verify(token)
        return self.token(token)

    def token(self, token: str) -> Principal:
        if self.principals is None:
            raise AuthFailed("bad_token", "bearer token not accepted: this server has no "
                             "--principals file")
        digest = digest_of(token)
        # Indexed by the digest's first 16 hex digits; the whole digest is compared in
        # constant time.
        for stored, found in self.principals.current.by_token.get(digest[:16], ()):
            if same_digest(stored, digest):
                return found.by(BY_TOKEN)
        raise AuthFailed("bad_token", "bearer token not recognized")

    def certificate(self, ctx: dict[str, list[bytes]]) -> Principal | None:
        """The principal of a verified client certificate, None when there is none.

        Raises AuthFailed for a certificate that names no principal.
        """
        names = [v.decode("utf-8", "replace") for key in _URI_KEYS for v in ctx.get(key, ())]
        names += [v.decode("utf-8", "replace") for v in ctx.get(_CN_KEY, ())]
        names = list(dict.fromkeys(n for n in names if n))
        if not names:
            return None
        if self.principals is None:
            # --client-ca alone: the CA is the authority; what it signed may do everything.
            return Principal(names[0], frozenset(ROLES), (ANY,), (ANY,), identities=(names[0],),
                             method=BY_MTLS)
        index = self.principals.current.by_identity
        for name in names:
            found = index.get(name)
            if found is not None:
                return found.by(BY_MTLS)
        raise AuthFailed("unknown_identity", f"client certificate {names[0]!r} names no "
                         "principal (list it under a principal's `identities`)")


def _authorization(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else None
    return None


__all__ = ["ADMIN", "AuthFailed", "Authenticator", "JwtVerifier"]
