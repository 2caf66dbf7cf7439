"""`proctor approvals list|show|approve|deny`: reviewers' commands, over gRPC to a server.

    proctor approvals list [--status pending|approved|denied|expired|consumed|all]
                           [--tenant T] [--approver GROUP] [--limit N] [--json]
    proctor approvals show ID [--json]
    proctor approvals approve ID [--reviewer R] [--reason TEXT]
    proctor approvals deny ID [--reviewer R] --reason TEXT

Every command takes --server HOST:PORT (default 127.0.0.1:50051) and --timeout.
`list` shows pending approvals unless --status says otherwise, newest first.
The reviewer defaults to $USER. Exit codes: 0 done; 1 the server refused
(NOT_FOUND, FAILED_PRECONDITION, UNAVAILABLE ...); 2 bad usage or
INVALID_ARGUMENT.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from typing import Any

from google.protobuf import timestamp_pb2

from .. import client_flags

DEFAULT_SERVER = "127.0.0.1:50051"
STATUSES = ("pending", "approved", "denied", "expired", "consumed", "all")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("approvals", help="list and resolve approvals (reviewers)")
    sub = p.add_subparsers(dest="approvals_command", metavar="SUBCOMMAND")
    sub.required = True

    ls = sub.add_parser("list", help="approvals, newest first (pending unless --status)")
    _common(ls)
    ls.add_argument("--status", choices=STATUSES, default="pending")
    ls.add_argument("--tenant", default="")
    ls.add_argument("--approver", default="", help="only those this approver group may resolve")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true", help="one JSON approval per line")
    ls.set_defaults(func=_list)

    show = sub.add_parser("show", help="one approval in full")
    _common(show)
    show.add_argument("approval_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)

    for name, approve in (("approve", True), ("deny", False)):
        r = sub.add_parser(name, help=f"{name} a pending approval")
        _common(r)
        r.add_argument("approval_id")
        r.add_argument("--reviewer", default=None,
                       help="who resolves it, on a server in development mode (default: "
                            "$USER); with a credential the server records its principal")
        r.add_argument("--reason", default="", required=not approve,
                       help="why (required to deny)")
        r.set_defaults(func=_resolve, approve=approve)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_SERVER, help="HOST:PORT of a Proctor server")
    p.add_argument("--timeout", type=float, default=10.0, help="call deadline in seconds")
    client_flags.add_arguments(p)  # --token-file ($PROCTOR_TOKEN), --tls-ca/-cert/-key


# -- the calls --------------------------------------------------------------------------------


def _stub(channel: Any) -> Any:
    from proctor.v1 import approvals_pb2_grpc

    return approvals_pb2_grpc.ApprovalsStub(channel)


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    """Run one RPC; on error print it and return the exit code as an int."""
    import grpc

    with client_flags.open_channel(args.server, args) as ch:
        try:
            return getattr(_stub(ch), method)(request, timeout=args.timeout)
        except grpc.RpcError as e:
            code = e.code()
            print(f"proctor approvals {args.approvals_command}: {code.name}: {e.details()}",
                  file=sys.stderr)
            return 2 if code == grpc.StatusCode.INVALID_ARGUMENT else 1


def _list(args: argparse.Namespace) -> int:
    from proctor.v1 import approvals_pb2

    name = "UNSPECIFIED" if args.status == "all" else args.status.upper()
    status = f"APPROVAL_STATUS_{name}"  # the label; --status choices keep it known
    req = approvals_pb2.ListApprovalsRequest(
        status=status, tenant=args.tenant, approver=args.approver, limit=args.limit)
    resp = _call(args, "ListApprovals", req)
    if isinstance(resp, int):
        return resp
    items = [as_dict(a) for a in resp.approvals]
    if args.json:
        for item in items:
            print(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
    else:
        print(render_table(items))
    return 0


def _show(args: argparse.Namespace) -> int:
    from proctor.v1 import approvals_pb2

    resp = _call(args, "GetApproval", approvals_pb2.GetApprovalRequest(
        approval_id=args.approval_id))
    if isinstance(resp, int):
        return resp
    item = as_dict(resp)
    print(json.dumps(item, ensure_ascii=False, indent=2) if args.json else render_one(item))
    return 0


def _resolve(args: argparse.Namespace) -> int:
    from proctor.v1 import approvals_pb2

    reviewer = args.reviewer
    if reviewer is None:  # a credential names the reviewer; without one, $USER does
        credentialed = client_flags.has_credential(args)
        reviewer = "" if credentialed else os.environ.get("USER", "")
        if not reviewer and not credentialed:
            print(f"proctor approvals {args.approvals_command}: give --reviewer (no $USER)",
                  file=sys.stderr)
            return 2
    req = approvals_pb2.ResolveApprovalRequest(
        approval_id=args.approval_id, approve=args.approve, reviewer=reviewer,
        reason=args.reason)
    resp = _call(args, "ResolveApproval", req)
    if isinstance(resp, int):
        return resp
    a = as_dict(resp)
    why = f": {a['resolution_reason']}" if a["resolution_reason"] else ""
    print(f"{a['approval_id']} {a['status']} by {a['reviewer']}{why}")
    return 0


# -- rendering --------------------------------------------------------------------------------


def _time(ts: timestamp_pb2.Timestamp, present: bool) -> str:
    if not present:
        return ""
    when: dt.datetime = ts.ToDatetime(tzinfo=dt.UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def as_dict(a: Any) -> dict[str, Any]:
    from proctor.v1 import approvals_pb2

    name = approvals_pb2.ApprovalStatus.Name(a.status).removeprefix("APPROVAL_STATUS_")
    return {
        "approval_id": a.approval_id,
        "status": name.lower(),
        "tenant": a.tenant,
        "run_id": a.run_id,
        "request_id": a.request_id,
        "delegation_path": list(a.delegation_path),
        "topic": a.topic,
        "risk_tags": list(a.risk_tags),
        "derived_tags": list(a.derived_tags),
        "labels": dict(a.labels),
        "rule_id": a.rule_id,
        "reason": a.reason,
        "approvers": list(a.approvers),
        "policy_version": a.policy_version,
        "decision_id": a.decision_id,
        "action_hash": a.action_hash,
        "created_at": _time(a.created_at, a.HasField("created_at")),
        "expires_at": _time(a.expires_at, a.HasField("expires_at")),
        "resolved_at": _time(a.resolved_at, a.HasField("resolved_at")),
        "reviewer": a.reviewer,
        "resolution_reason": a.resolution_reason,
    }


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def render_table(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no approvals"
    head = ("ID", "STATUS", "CREATED", "EXPIRES", "TENANT", "ACTION", "PATH", "RULE",
            "APPROVERS", "REVIEWER")
    rows = [head]
    for a in items:
        rows.append((
            a["approval_id"], a["status"], a["created_at"], a["expires_at"], a["tenant"] or "-",
            _clip(a["topic"], 40), _clip(" > ".join(a["delegation_path"]), 40),
            _clip(a["rule_id"], 32), ",".join(a["approvers"]) or "(any)", a["reviewer"] or "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def render_one(a: dict[str, Any]) -> str:
    rows = [
        ("approval", a["approval_id"]),
        ("status", a["status"]),
        ("tenant", a["tenant"] or "-"),
        ("run id", a["run_id"] or "-"),
        ("request id", a["request_id"] or "-"),
        ("delegation", " -> ".join(a["delegation_path"])),
        ("action", a["topic"]),
        ("risk tags", ", ".join(a["risk_tags"]) or "-"),
        ("derived tags", ", ".join(a["derived_tags"]) or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items())) or "-"),
        ("rule", f"{a['rule_id']}: {a['reason']}"),
        ("approvers", ", ".join(a["approvers"]) or "(any reviewer)"),
        ("policy version", a["policy_version"]),
        ("decision id", a["decision_id"]),
        ("created", a["created_at"]),
        ("expires", a["expires_at"]),
        ("resolved", a["resolved_at"] or "-"),
        ("reviewer", a["reviewer"] or "-"),
        ("review reason", a["resolution_reason"] or "-"),
        ("action hash", a["action_hash"]),
    ]
    return "\n".join(f"{k:15} {v}" for k, v in rows)
