"""`proctor principals hash|add`: hashed tokens and entries of a --principals file.

    proctor principals hash < token.txt          # prints sha256:<hex> of the token
    proctor principals add planner-bot --role agent --tenant acme --agent planner \\
        --file principals.yaml                   # appends the entry, prints a new token once

`add` appends text (comments and layout of the file are kept), checks that the
whole file still loads, and replaces the file atomically; the server picks it
up on its next reload.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# auth.principal.ROLES; spelled out so that building the parser imports nothing heavy
ROLES = ("agent", "reviewer", "auditor", "admin")


def register(sub: Any) -> None:
    p = sub.add_parser("principals", help="write principals and hash their tokens")
    cmds = p.add_subparsers(dest="principals_command", metavar="COMMAND")
    cmds.required = True
    h = cmds.add_parser("hash", help="print the sha256: form of a token read on stdin")
    h.set_defaults(func=_hash)
    a = cmds.add_parser("add", help="append a principal to a principals file; print its token")
    a.add_argument("id", help="the principal's id")
    a.add_argument("--file", required=True, help="the --principals file (created if missing)")
    a.add_argument("--role", action="append", required=True, choices=ROLES, dest="roles")
    a.add_argument("--tenant", action="append", default=[], dest="tenants",
                   help='a tenant it may act on ("*" = every tenant); repeatable')
    a.add_argument("--agent", action="append", default=[], dest="agents",
                   help="an agent id or pattern it may act as; repeatable")
    a.add_argument("--group", action="append", default=[], dest="groups",
                   help="a reviewer group (a rule's approvers); repeatable")
    a.add_argument("--identity", action="append", default=[], dest="identities",
                   help="an mTLS identity (URI SAN or CN); repeatable")
    a.add_argument("--no-token", action="store_true",
                   help="no bearer token (mTLS identities only)")
    a.set_defaults(func=_add)


def _hash(args: argparse.Namespace) -> int:
    from .auth.tokens import hash_token

    token = sys.stdin.readline().strip()
    if not token:
        print("proctor principals hash: give the token on stdin", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def _add(args: argparse.Namespace) -> int:
    from .auth.principals import PrincipalsError, parse_principals
    from .auth.tokens import hash_token, new_token

    path = Path(args.file)
    old = path.read_text(encoding="utf-8") if path.exists() else "principals:\n"
    if not old.strip():
        old = "principals:\n"
    token = "" if args.no_token else new_token()
    entry: dict[str, list[str]] = {"roles": args.roles}
    for name in ("tenants", "agents", "groups", "identities"):
        if getattr(args, name):
            entry[name] = getattr(args, name)
    if token:
        entry["tokens"] = [hash_token(token)]
    lines = [f"  - id: {json.dumps(args.id)}"]
    lines += [f"    {k}: {json.dumps(v)}" for k, v in entry.items()]
    text = old + ("" if old.endswith("\n") else "\n") + "\n".join(lines) + "\n"
    try:
        parse_principals(text, source=str(path))
    except PrincipalsError as e:
        print(f"proctor principals add: {e}", file=sys.stderr)
        return 2
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        print(f"proctor principals add: cannot write {path}: {e}", file=sys.stderr)
        return 1
    if token:
        print(token)  # shown once: the file keeps only its hash
    print(f"added principal {args.id!r} to {path}", file=sys.stderr)
    return 0
