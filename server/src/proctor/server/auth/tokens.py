"""Bearer tokens: stored only as SHA-256 hex ("sha256:<64 hex>"), never in clear.

A presented token is hashed and looked up by its digest; the stored digest is
then compared with `hmac.compare_digest`, so no comparison of secret material
depends on where two values first differ. (The lookup itself is keyed by the
SHA-256 of the token: timing it tells nothing about the token.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "sha256:"
MAX_TOKEN_CHARS = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


def hash_token(token: str) -> str:
    """The stored form of a token: "sha256:" and its SHA-256 in lower-case hex."""
    return PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def parse_stored(value: str) -> str:
    """The 64 hex digits of a stored token hash; ValueError for anything else."""
    text = value.strip().lower()
    digest = text[len(PREFIX):] if text.startswith(PREFIX) else ""
    if not _HEX64.fullmatch(digest):
        raise ValueError(
            "a token is stored as sha256:<64 hex digits> (`proctor principals hash` makes one), "
            "never in clear"
        )
    return digest


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def same_digest(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode("ascii"), presented.encode("ascii"))
