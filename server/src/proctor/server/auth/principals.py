"""The --principals file: read, validate, index; and the holder that reloads it.

    principals:
      - id: planner-bot
        roles: [agent]
        tenants: [acme]                 # "*" = every tenant
        agents: ["planner", "research-*"]
        tokens: ["sha256:9f86d0..."]
        groups: [data-governance]
        identities: ["spiffe://acme.example/agent/planner"]   # mTLS URI SAN or CN

The file is read like a policy: a regular file within a size limit, aliases
bounded. A reload (file change, SIGHUP) that fails keeps the principals in
force; the error is logged and kept for `last_error`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from proctor.engine import PolicyError
from proctor.engine.limits import read_text_file
from proctor.engine.yamlread import MAP, SCALAR, SEQ, YamlError, YNode, read_yaml

from .. import logs
from .principal import ADMIN, AGENT, ANY, ROLES, Principal
from .tokens import parse_stored

log = logging.getLogger("proctor.auth")

MAX_PRINCIPALS_BYTES = 4 * 1024 * 1024
MAX_EXPANDED_CHARS = 16 * 1024 * 1024
MAX_PRINCIPALS = 100_000
MAX_ITEMS = 1000  # per list (roles, tenants, agents, groups, tokens, identities)
MAX_NAME_CHARS = 512
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:/+=-]{0,255}")
_FIELDS = ("id", "roles", "tenants", "agents", "groups", "tokens", "identities")


class PrincipalsError(Exception):
    """A principals file that cannot be used: FILE:LINE: message."""


@dataclass(frozen=True, slots=True)
class PrincipalSet:
    """The principals of one file, indexed by token digest and by mTLS identity."""

    principals: tuple[Principal, ...] = ()
    # digest[:16] -> ((digest, principal), ...): see Authenticator.token
    by_token: Mapping[str, tuple[tuple[str, Principal], ...]] = field(default_factory=dict)
    by_identity: Mapping[str, Principal] = field(default_factory=dict)
    source: str = ""

    def get(self, principal_id: str) -> Principal | None:
        return next((p for p in self.principals if p.id == principal_id), None)


def load_principals(path: str) -> PrincipalSet:
    """Read and validate a principals file; raises PrincipalsError naming file and line."""
    try:
        text = read_text_file(path, max_bytes=MAX_PRINCIPALS_BYTES, what="principals file")
    except PolicyError as e:
        raise PrincipalsError(str(e)) from None
    return parse_principals(text, source=path)


def parse_principals(text: str, source: str = "<string>") -> PrincipalSet:
    try:
        root = read_yaml(text, max_expanded=MAX_EXPANDED_CHARS)
    except YamlError as e:
        raise _error(source, e.line, e.message) from None
    if root is None or root.kind != MAP:
        raise _error(source, root.line if root else None, "expected a mapping with `principals:`")
    items: YNode | None = None
    for key, value in root.value:
        if key.value != "principals":
            raise _error(source, key.line, f"unknown key {key.value!r} (expected `principals`)")
        items = value
    if items is None or items.kind != SEQ:
        raise _error(source, items.line if items else root.line, "`principals` must be a list")
    if len(items.value) > MAX_PRINCIPALS:
        raise _error(source, items.line, f"at most {MAX_PRINCIPALS} principals")
    principals: list[Principal] = []
    by_token: dict[str, tuple[tuple[str, Principal], ...]] = {}
    owners: dict[str, str] = {}
    by_identity: dict[str, Principal] = {}
    seen: set[str] = set()
    for node in items.value:
        p, digests = _principal(node, source)
        if p.id in seen:
            raise _error(source, node.line, f"principal {p.id!r} is listed twice")
        seen.add(p.id)
        for digest in digests:
            if digest in owners:
                raise _error(source, node.line, f"principal {p.id!r}: a token is also "
                             f"{owners[digest]!r}'s")
            owners[digest] = p.id
            by_token[digest[:16]] = (*by_token.get(digest[:16], ()), (digest, p))
        for ident in p.identities:
            if ident in by_identity:
                raise _error(source, node.line, f"principal {p.id!r}: identity {ident!r} is "
                             f"also {by_identity[ident].id!r}'s")
            by_identity[ident] = p
        principals.append(p)
    return PrincipalSet(tuple(principals), by_token, by_identity, source)


def _principal(node: YNode, source: str) -> tuple[Principal, list[str]]:
    if node.kind != MAP:
        raise _error(source, node.line, "each principal is a mapping with an `id`")
    values: dict[str, tuple[str, ...]] = {}
    pid = ""
    for key, value in node.value:
        name = key.value
        if name not in _FIELDS:
            raise _error(source, key.line, f"unknown field {name!r} (known: {', '.join(_FIELDS)})")
        if name == "id":
            if value.kind != SCALAR or not isinstance(value.value, str) \
                    or not _ID.fullmatch(value.value):
                raise _error(source, value.line, "id: a name of letters, digits and ._@:/+=- "
                             "(at most 256 characters)")
            pid = value.value
        else:
            values[name] = _strings(value, name, source)
    if not pid:
        raise _error(source, node.line, "a principal needs an `id`")
    roles = values.get("roles", ())
    for role in roles:
        if role not in ROLES:
            raise _error(source, node.line, f"principal {pid!r}: unknown role {role!r} "
                         f"(roles: {', '.join(ROLES)})")
    if not roles:
        raise _error(source, node.line, f"principal {pid!r}: roles: at least one of "
                     f"{', '.join(ROLES)}")
    admin = ADMIN in roles
    tenants = values.get("tenants", (ANY,) if admin else ())
    if not tenants:
        raise _error(source, node.line, f"principal {pid!r}: tenants: name its tenants "
                     "(\"*\" for every tenant)")
    agents = values.get("agents", (ANY,) if admin else ())
    if AGENT in roles and not agents and not admin:
        raise _error(source, node.line, f"principal {pid!r}: role agent needs `agents`, the "
                     "agent ids it may act as (\"*\" for any)")
    try:
        digests = [parse_stored(t) for t in values.get("tokens", ())]
    except ValueError as e:
        raise _error(source, node.line, f"principal {pid!r}: tokens: {e}") from None
    p = Principal(pid, frozenset(roles), tenants, agents, frozenset(values.get("groups", ())),
                  values.get("identities", ()))
    return p, digests


def _strings(node: YNode, name: str, source: str) -> tuple[str, ...]:
    if node.kind != SEQ:
        raise _error(source, node.line, f"{name}: a list of strings")
    if len(node.value) > MAX_ITEMS:
        raise _error(source, node.line, f"{name}: at most {MAX_ITEMS} items")
    out: list[str] = []
    for item in node.value:
        if item.kind != SCALAR or not isinstance(item.value, str) or not item.value \
                or len(item.value) > MAX_NAME_CHARS:
            raise _error(source, item.line, f"{name}: each item a non-empty string of at most "
                         f"{MAX_NAME_CHARS} characters")
        out.append(item.value)
    return tuple(dict.fromkeys(out))


def _error(source: str, line: int | None, message: str) -> PrincipalsError:
    where = f"{source}:{line}" if line else source
    return PrincipalsError(f"{where}: {message}")


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PrincipalsHolder:
    """The principals in force: `current`, swapped whole on a good reload."""

    def __init__(self, path: str, current: PrincipalSet) -> None:
        self.path = path
        self.current = current
        self.last_error = ""
        self._stamp = _stamp(path)
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, path: str) -> PrincipalsHolder:
        return cls(path, load_principals(path))

    async def reload(self, trigger: str) -> bool:
        """Read the file again (in a thread); keep the old principals when it is bad."""
        async with self._lock:
            stamp = _stamp(self.path)
            try:
                fresh = await asyncio.to_thread(load_principals, self.path)
            except PrincipalsError as e:
                self._stamp = stamp
                self.last_error = str(e)
                logs.event(log, logging.ERROR, "principals reload failed", trigger=trigger,
                           error=str(e), kept=len(self.current.principals))
                return False
            self._stamp = stamp
            self.current = fresh
            self.last_error = ""
            logs.event(log, logging.INFO, "principals reloaded", trigger=trigger,
                       principals=len(fresh.principals))
            return True

    async def watch(self, poll_seconds: float) -> None:
        """Reload whenever the file's mtime, size or inode changes (until cancelled)."""
        while True:
            await asyncio.sleep(poll_seconds)
            if _stamp(self.path) != self._stamp:
                await self.reload("file")


