"""Who calls the gateway over HTTP: bearer tokens from a principals file (DESIGN section 12).

`--http-principals FILE` takes the same YAML as `proctor serve --principals`,
reading only what the gateway needs:

    principals:
      - id: alice-laptop            # the acting agent of this caller's tool calls
        tenants: [acme]             # exactly one: the tenant of its calls (else --tenant)
        tokens: ["sha256:9f86d0..."]  # bearer tokens, stored only as SHA-256 hex

Each HTTP request must then carry `Authorization: Bearer <token>`; the SDK's
bearer middleware answers 401 otherwise, and the caller's principal id becomes
the delegation path of its calls. Tokens are compared as SHA-256 digests in
constant time. Over stdio, or over HTTP without the file, every call is
`--agent`'s.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

MAX_FILE_BYTES = 1 << 20


class CallersError(ValueError):
    """The principals file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class HttpCaller:
    id: str
    tenants: tuple[str, ...]
    digests: tuple[bytes, ...]


def load_callers(path: str) -> tuple[HttpCaller, ...]:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise CallersError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CallersError(f"{path}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CallersError(f"{path}: not YAML: {e}") from None
    entries = doc.get("principals") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise CallersError(f"{path}: expected a mapping with a 'principals' list")
    out: list[HttpCaller] = []
    for i, entry in enumerate(entries):
        where = f"{path}: principals[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise CallersError(f"{where}: needs an id (a string)")
        tenants = entry.get("tenants") or []
        tokens = entry.get("tokens") or []
        if not all(isinstance(t, str) for t in [*tenants, *tokens]):
            raise CallersError(f"{where}: tenants and tokens are lists of strings")
        out.append(HttpCaller(entry["id"], tuple(tenants),
                              tuple(_digest(t, where) for t in tokens)))
    return tuple(out)


def _digest(text: str, where: str) -> bytes:
    hexed = text.removeprefix("sha256:")
    try:
        raw = bytes.fromhex(hexed)
    except ValueError:
        raw = b""
    if not text.startswith("sha256:") or len(raw) != 32:
        raise CallersError(f"{where}: tokens are 'sha256:' and 64 hex digits "
                           "(the token's SHA-256, never the token)")
    return raw


class PrincipalTokens:
    """The SDK's TokenVerifier over the principals' token digests."""

    def __init__(self, callers: tuple[HttpCaller, ...]) -> None:
        self.callers = callers
        self.by_id = {c.id: c for c in callers}

    async def verify_token(self, token: str) -> AccessToken | None:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        found: HttpCaller | None = None
        for caller in self.callers:
            for known in caller.digests:
                # Every digest is compared, so the time taken does not say which matched.
                if hmac.compare_digest(digest, known) and found is None:
                    found = caller
        if found is None:
            return None
        from mcp.server.auth.provider import AccessToken

        return AccessToken(token=token, client_id=found.id, scopes=[])

    def tenant_of(self, caller_id: str, default: str) -> str:
        c = self.by_id.get(caller_id)
        tenants: tuple[str, ...] = c.tenants if c is not None else ()
        return tenants[0] if len(tenants) == 1 and tenants[0] != "*" else default
