"""JWT bearer credentials: keys from --jwt-jwks (a file or an https URL), verified with PyJWT.

Keys are fetched off the request path: once at start (a JWKS that cannot be
read stops the start), then every `refresh_seconds` by a background task, and
early (at most every `min_refresh_seconds`) when a token names a key id the
set does not hold, so a rotation at the issuer is picked up within seconds.
A refresh that fails keeps the keys in force.

What is accepted: asymmetric algorithms only (RS*, PS*, ES*, EdDSA), each with
a key of its own type; `alg: none` and HMAC are refused before any key is
looked at, so a public key can never be used as an HMAC secret. `iss` and
`aud` must be the configured ones, `exp` is required, `exp` and `nbf` are
checked with LEEWAY_SECONDS of leeway. `sub` is the principal id; roles,
tenants, agents and groups come from the claims proctor_roles,
proctor_tenants, proctor_agents and groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from typing import Any

import jwt

from proctor.engine import PolicyError
from proctor.engine.limits import read_text_file

from .. import logs
from .authenticate import AuthFailed
from .principal import BY_JWT, ROLES, Principal

log = logging.getLogger("proctor.auth")

LEEWAY_SECONDS = 30
MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT_SECONDS = 10.0
MAX_CLAIM_ITEMS = 1000
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
              "ES256", "ES384", "ES512", "EdDSA")
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class JwksError(Exception):
    """A JWKS that cannot be read or holds no usable key."""


def parse_jwks(text: str, source: str) -> dict[str, jwt.PyJWK]:
    """The asymmetric keys of a JWKS document by key id ("" for a key without one)."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise JwksError(f"{source}: not JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f"{source}: expected a JWKS, {{\"keys\": [...]}}")
    keys: dict[str, jwt.PyJWK] = {}
    for item in doc["keys"]:
        if not isinstance(item, dict) or item.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # symmetric ("oct") and unknown keys are never used
        if item.get("use", "sig") != "sig":
            continue
        try:
            keys[str(item.get("kid", ""))] = jwt.PyJWK(item)
        except jwt.PyJWTError as e:
            log.warning("JWKS %s: key %r skipped: %s", source, item.get("kid"), e)
    if not keys:
        raise JwksError(f"{source}: no RSA, EC or OKP signing key")
    return keys


def read_jwks(source: str) -> dict[str, jwt.PyJWK]:
    """Read (blocking: run it in a thread) and parse the JWKS at a path or https URL."""
    if source.startswith("https://"):
        try:
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_SECONDS) as r:  # noqa: S310
                data = r.read(MAX_JWKS_BYTES + 1)
        except OSError as e:
            raise JwksError(f"{source}: cannot fetch ({e})") from None
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"{source}: larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(data.decode("utf-8", "replace"), source)
    try:
        text = read_text_file(source, max_bytes=MAX_JWKS_BYTES, what="JWKS")
    except PolicyError as e:
        raise JwksError(str(e)) from None
    return parse_jwks(text, source)


class JwtVerifier:
    """Verifies JWT bearer tokens against a JWKS kept fresh in the background."""

    def __init__(self, source: str, issuer: str, audience: str, *,
                 refresh_seconds: float = 300.0, min_refresh_seconds: float = 5.0) -> None:
        self.source = source
        self.issuer = issuer
        self.audience = audience
        self.refresh_seconds = refresh_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self.keys: dict[str, jwt.PyJWK] = {}
        self._last_fetch = 0.0
        self._wake: asyncio.Event | None = None
        self.last_error = ""

    def load(self) -> None:
        """Read the keys now (at start; raises JwksError)."""
        self.keys = read_jwks(self.source)
        self._last_fetch = time.monotonic()

    async def refresh(self) -> bool:
        """Read the keys again in a thread; keep the old ones when that fails."""
        self._last_fetch = time.monotonic()
        try:
            self.keys = await asyncio.to_thread(read_jwks, self.source)
        except JwksError as e:
            self.last_error = str(e)
            logs.event(log, logging.WARNING, "JWKS refresh failed", error=str(e),
                       kept=len(self.keys))
            return False
        self.last_error = ""
        return True

    async def run(self) -> None:
        """Refresh every refresh_seconds, or sooner when asked (until cancelled)."""
        self._wake = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            self._wake.clear()
            await self.refresh()

    def _ask_refresh(self) -> None:
        if self._wake is not None and \
                time.monotonic() - self._last_fetch >= self.min_refresh_seconds:
            self._wake.set()

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthFailed("bad_jwt", f"JWT: malformed ({e})") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise AuthFailed("bad_jwt", f"JWT: algorithm {alg!r} refused (accepted: "
                             f"{', '.join(ALGORITHMS)})")
        kid = header.get("kid", "")
        key = self.keys.get(str(kid))
        if key is None:
            self._ask_refresh()  # a rotation at the issuer: fetch the keys again soon
            raise AuthFailed("unknown_key", f"JWT: key {kid!r} is not in the JWKS")
        if _KEY_TYPES[alg[:2]] != key.key_type:
            raise AuthFailed("bad_jwt", f"JWT: algorithm {alg} does not fit key {kid!r} "
                             f"({key.key_type})")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthFailed("expired", "JWT: expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthFailed("not_yet_valid", "JWT: not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise AuthFailed("bad_jwt", "JWT: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthFailed("bad_jwt", "JWT: wrong issuer") from None
        except jwt.PyJWTError as e:
            raise AuthFailed("bad_jwt", f"JWT: {e}") from None
        return principal_of(claims)


def principal_of(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 256:
        raise AuthFailed("bad_jwt", "JWT: `sub` must name the principal")
    roles = frozenset(r for r in _strings(claims, "proctor_roles") if r in ROLES)
    return Principal(sub, roles, _strings(claims, "proctor_tenants"),
                     _strings(claims, "proctor_agents"), frozenset(_strings(claims, "groups")),
                     method=BY_JWT)


def _strings(claims: dict[str, Any], name: str) -> tuple[str, ...]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or len(value) > MAX_CLAIM_ITEMS or not all(
            isinstance(v, str) and 0 < len(v) <= 512 for v in value):
        raise AuthFailed("bad_jwt", f"JWT: claim {name} must be a list of strings")
    return tuple(dict.fromkeys(value))
