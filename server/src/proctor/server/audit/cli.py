"""`proctor audit tail|consume|verify|show` and `proctor replay`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

DEFAULT_STREAM = "proctor:audit"
KIND_CHOICES = ("decision", "budget", "approval", "policy_reload", "gap")


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="read, consume and verify the audit")
    sub = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND")
    sub.required = True

    tail = sub.add_parser("tail", help="print audit events (and follow new ones)")
    _source_args(tail, server=True)
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    tail.add_argument("--json", action="store_true", help="one JSON event per line")
    tail.add_argument("--cursor", default="", help="resume after this cursor")
    tail.add_argument("--print-cursor", action="store_true", help="print the last cursor to stderr")
    tail.add_argument("--tenant", default="")
    tail.add_argument("--decision", default="", choices=("", "allow", "deny", "require_approval"))
    tail.add_argument("--topic-prefix", default="")
    tail.add_argument("--kind", action="append", default=[], choices=KIND_CHOICES)
    tail.set_defaults(func=_tail)

    consume = sub.add_parser("consume", help="read the Redis stream through a consumer group")
    consume.add_argument("--redis-url", required=True)
    consume.add_argument("--audit-stream", default=DEFAULT_STREAM)
    consume.add_argument("--group", required=True)
    consume.add_argument("--consumer", required=True)
    consume.add_argument("--out", required=True, help="directory for the consumer's JSONL")
    consume.add_argument("--claim-idle-ms", type=int, default=30_000,
                         help="reclaim entries pending this long for another consumer")
    consume.add_argument("--batch", type=int, default=500)
    consume.add_argument("--start-id", default="0", help="where a new group starts (0 or $)")
    consume.add_argument("--max-idle", type=float, default=None,
                         help="exit after this many seconds without new entries")
    consume.set_defaults(func=_consume)

    verify = sub.add_parser("verify", help="check every writer's hash chain; exit 1 if broken")
    _source_args(verify)
    verify.add_argument("--hmac-key-file", default=None)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=_verify)

    show = sub.add_parser("show", help="print the governance envelope of one decision")
    show.add_argument("decision_id")
    _source_args(show)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)

    replay = subparsers.add_parser("replay", help="re-decide recorded decisions under a candidate")
    replay.add_argument("--policy", required=True, help="the candidate policy")
    replay.add_argument("--audit", dest="audit_dir", default=None, help="audit directory")
    replay.add_argument("--redis-url", default=None)
    replay.add_argument("--audit-stream", default=DEFAULT_STREAM)
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=_replay)


def _source_args(p: argparse.ArgumentParser, server: bool = False) -> None:
    p.add_argument("--audit-dir", default=None, help="a directory of audit segments")
    p.add_argument("--redis-url", default=None, help="read the Redis stream instead")
    p.add_argument("--audit-stream", default=DEFAULT_STREAM)
    if server:
        p.add_argument("--server", default=None, help="HOST:PORT: Audit.StreamDecisions")


def _need_source(args: argparse.Namespace) -> str | None:
    if not args.audit_dir and not args.redis_url and not getattr(args, "server", None):
        return "give --audit-dir DIR or --redis-url URL" + (
            " or --server HOST:PORT" if hasattr(args, "server") else ""
        )
    return None


def _events(args: argparse.Namespace) -> Any:
    from .reader import open_reader

    reader = open_reader(args.audit_dir, args.redis_url, args.audit_stream)
    while True:
        items = reader.poll(2000)
        if not items:
            return
        for it in items:
            reader.ack(it)
            yield it.event


# ---- tail -----------------------------------------------------------------------------------


def readable(ev: dict[str, Any]) -> str:
    kind = ev.get("kind", "?")
    head = f"{ev.get('time', '?')} {ev.get('writer', '?')}#{ev.get('seq', '?')} {kind}"
    if kind == "gap":
        return f"{head} GAP {ev.get('count', '?')} events shed ({ev.get('reason', '')})"
    parts = [head, str(ev.get("outcome", ""))]
    if ev.get("rule_id"):
        parts.append(f"rule={ev['rule_id']}")
    if ev.get("topic"):
        parts.append(f"topic={ev['topic']}")
    if ev.get("tenant"):
        parts.append(f"tenant={ev['tenant']}")
    if ev.get("delegation_path"):
        parts.append("path=" + ">".join(map(str, ev["delegation_path"])))
    if ev.get("policy_version"):
        parts.append(f"policy={ev['policy_version']}")
    if ev.get("decision_id"):
        parts.append(f"id={ev['decision_id']}")
    if ev.get("approval_id"):
        parts.append(f"approval={ev['approval_id']}")
    if "latency_us" in ev:
        parts.append(f"{ev['latency_us']}us")
    return " ".join(parts)


def _emit(ev: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(ev, ensure_ascii=False, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(readable(ev) + "\n")
    sys.stdout.flush()


def _tail(args: argparse.Namespace) -> int:
    err = _need_source(args)
    if err:
        print(f"proctor audit tail: {err}", file=sys.stderr)
        return 2
    if args.server:
        return _tail_server(args)
    from .reader import CursorError, open_reader
    from .stream import EventFilter

    flt = EventFilter(args.tenant, args.decision, args.topic_prefix, tuple(args.kind))
    try:
        reader = open_reader(args.audit_dir, args.redis_url, args.audit_stream, args.cursor)
    except CursorError as exc:
        print(f"proctor audit tail: {exc}", file=sys.stderr)
        return 2
    import redis

    try:
        while True:
            try:
                items = reader.poll(1000)
            except redis.RedisError as exc:
                if not args.follow:
                    print(f"proctor audit tail: redis: {exc}", file=sys.stderr)
                    return 1
                time.sleep(1.0)
                continue
            for it in items:
                reader.ack(it)
                if flt.match(it.event):
                    _emit(it.event, args.json)
            if not items:
                if not args.follow:
                    break
                time.sleep(0.2)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    if args.print_cursor:
        print(reader.cursor(), file=sys.stderr)
    return 0


def _tail_server(args: argparse.Namespace) -> int:
    import grpc

    from proctor.v1 import audit_pb2, audit_pb2_grpc

    from .stream import KIND_TO_PROTO

    req = audit_pb2.StreamDecisionsRequest(
        cursor=args.cursor, follow=args.follow,
        filter=audit_pb2.AuditFilter(
            tenant=args.tenant, decision=args.decision, topic_prefix=args.topic_prefix,
            kinds=[KIND_TO_PROTO[k] for k in args.kind],
        ),
    )
    last = args.cursor
    with grpc.insecure_channel(args.server) as ch:
        stub = audit_pb2_grpc.AuditStub(ch)
        try:
            for msg in stub.StreamDecisions(req):
                ev = json.loads(msg.record_json) if msg.record_json else {}
                ev["hash"] = msg.hash
                if msg.hmac:
                    ev["hmac"] = msg.hmac
                _emit(ev, args.json)
                last = msg.cursor
        except grpc.RpcError as exc:
            print(f"proctor audit tail: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, BrokenPipeError):
            pass
    if args.print_cursor:
        print(last, file=sys.stderr)
    return 0


# ---- consume / verify -----------------------------------------------------------------------


def _consume(args: argparse.Namespace) -> int:
    import logging

    from .consume import run_consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run_consumer(args)


def _verify(args: argparse.Namespace) -> int:
    from .verify import read_key, summary, verify_dir, verify_stream

    err = _need_source(args)
    if err:
        print(f"proctor audit verify: {err}", file=sys.stderr)
        return 2
    try:
        key = read_key(args.hmac_key_file) if args.hmac_key_file else None
    except (OSError, ValueError) as exc:
        print(f"proctor audit verify: {exc}", file=sys.stderr)
        return 2
    if args.redis_url:
        import redis

        try:
            rep = verify_stream(args.redis_url, args.audit_stream, key)
        except redis.RedisError as exc:
            print(f"proctor audit verify: redis: {exc}", file=sys.stderr)
            return 2
    else:
        rep = verify_dir(args.audit_dir, key)
    print(json.dumps(summary(rep)) if args.json else rep.render())
    return 0 if rep.ok else 1


# ---- show -----------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    err = _need_source(args)
    if err:
        print(f"proctor audit show: {err}", file=sys.stderr)
        return 2
    decisions: list[dict[str, Any]] = []
    related: list[dict[str, Any]] = []
    for ev in _events(args):
        if ev.get("decision_id") == args.decision_id:
            (decisions if ev.get("kind") == "decision" else related).append(ev)
        elif ev.get("kind") == "approval":
            related.append(ev)
    if not decisions:
        print(f"proctor audit show: no decision {args.decision_id}", file=sys.stderr)
        return 1
    d = decisions[0]
    approval_id = d.get("approval_id") or ""
    steps = [
        e for e in related
        if e.get("decision_id") == args.decision_id
        or (approval_id and e.get("approval_id") == approval_id)
    ]
    env = envelope(d, steps)
    if args.json:
        print(json.dumps(env, ensure_ascii=False, indent=2))
    else:
        print(render_envelope(env))
    return 0


def envelope(d: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    path = list(d.get("delegation_path") or [])
    status = "none"
    reviewer = reason = ""
    if d.get("outcome") == "require_approval":
        status = "pending" if d.get("approval_id") else "not created"
    approvers: list[str] = []
    expires_at = used_by = ""
    for s in steps:
        # Approval events (server/approvals/events.py) carry the status after the step;
        # only approved/denied steps carry reviewer and reason.
        status = str(s.get("status") or s.get("outcome") or status)
        reviewer = str(s.get("reviewer", reviewer))
        reason = str(s.get("reason", reason))
        approvers = list(s.get("approvers") or approvers)
        expires_at = str(s.get("expires_at") or expires_at)
        used_by = str(s.get("used_by") or used_by)
    from .event import format_time

    if status in ("pending", "approved") and expires_at and expires_at < format_time(time.time()):
        status = "expired"  # no server recorded the expiry (none was running), but it has passed
    return {
        "decision_id": d.get("decision_id", ""),
        "time": d.get("time", ""),
        "writer": d.get("writer", ""),
        "seq": d.get("seq"),
        "event_id": d.get("event_id", ""),
        "request_id": d.get("request_id", ""),
        "run_id": d.get("run_id", ""),
        "tenant": d.get("tenant", ""),
        "delegation_path": path,
        "acting_agent": path[-1] if path else "",
        "depth": max(0, len(path) - 1),
        "topic": d.get("topic", ""),
        "risk_tags": d.get("risk_tags", []),
        "derived_tags": d.get("derived_tags", []),
        "labels": d.get("labels", {}),
        "decision": d.get("outcome", ""),
        "rule_id": d.get("rule_id", ""),
        "reason": d.get("reason", ""),
        "policy_version": d.get("policy_version", ""),
        "latency_us": d.get("latency_us"),
        "approval": {
            "approval_id": d.get("approval_id", ""), "status": status, "reviewer": reviewer,
            "reason": reason, "approvers": approvers, "expires_at": expires_at,
            "used_by": used_by, "steps": steps,
        },
        "hash": d.get("hash", ""),
        "prev_hash": d.get("prev_hash", ""),
    }


def render_envelope(env: dict[str, Any]) -> str:
    a = env["approval"]
    rows = [
        ("decision id", env["decision_id"]),
        ("time", env["time"]),
        ("recorded by", f"{env['writer']} seq {env['seq']} (event {env['event_id']})"),
        ("request id", env["request_id"] or "-"),
        ("run id", env["run_id"] or "-"),
        ("tenant", env["tenant"] or "-"),
        ("delegation", " -> ".join(env["delegation_path"]) + f"  (depth {env['depth']})"),
        ("acting agent", env["acting_agent"]),
        ("action", env["topic"]),
        ("risk tags", ", ".join(env["risk_tags"]) or "-"),
        ("derived tags", ", ".join(env["derived_tags"]) or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(env["labels"].items())) or "-"),
        ("decision", env["decision"]),
        ("rule", f"{env['rule_id']}: {env['reason']}"),
        ("policy version", env["policy_version"]),
        ("latency", f"{env['latency_us']} us"),
        ("approval", a["approval_id"] or "-"),
        ("approval status", a["status"]),
        ("approvers", ", ".join(a.get("approvers") or []) or "-"),
        ("used by", a.get("used_by") or "-"),
        ("reviewer", a["reviewer"] or "-"),
        ("review reason", a["reason"] or "-"),
        ("hash", env["hash"]),
        ("prev hash", env["prev_hash"] or "(first of its chain)"),
    ]
    return "\n".join(f"{k:16} {v}" for k, v in rows)


# ---- replay ---------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    if not args.audit_dir and not args.redis_url:
        print("proctor replay: give --audit DIR (or --redis-url URL)", file=sys.stderr)
        return 2
    from proctor import engine

    from .replay import dump, replay

    try:
        res = replay(args.policy, _events(args))
    except engine.PolicyError as exc:
        print(f"proctor replay: {exc}", file=sys.stderr)
        return 2
    print(dump(res) if args.json else res.render())
    return 0
