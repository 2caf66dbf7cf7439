"""`proctor audit tail|consume|verify|show` and `proctor replay`.

Every command reads `./proctor-audit` unless told otherwise (`--audit-dir DIR`,
`--redis-url URL`, or for tail `--server HOST:PORT`): the directory `proctor serve`
writes by default.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .. import client_flags
from ..settings import DEFAULT_AUDIT_DIR, DEFAULT_AUDIT_STREAM
from .envelope import envelope, render_envelope

__all__ = ["envelope", "register", "render_envelope"]

DEFAULT_STREAM = DEFAULT_AUDIT_STREAM
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
    tail.add_argument("--run-id", default="", help="only the events of this run")
    tail.add_argument("--tenant", default="", help="only this tenant's events")
    tail.add_argument("--decision", default="", choices=("", "allow", "deny", "require_approval"),
                      help="only decisions with this outcome")
    tail.add_argument("--topic-prefix", default="", help="only topics starting with this")
    tail.add_argument("--kind", action="append", default=[], choices=KIND_CHOICES,
                      help="only events of this kind (repeat for several)")
    tail.set_defaults(func=_tail)

    consume = sub.add_parser("consume", help="read the Redis stream through a consumer group")
    consume.add_argument("--redis-url", required=True, help="the Redis holding the stream")
    consume.add_argument("--audit-stream", default=DEFAULT_STREAM, help="the audit stream")
    consume.add_argument("--group", required=True, help="consumer group (created if missing)")
    consume.add_argument("--consumer", required=True, help="this consumer's name in the group")
    consume.add_argument("--out", required=True, help="directory for the consumer's JSONL")
    consume.add_argument("--claim-idle-ms", type=int, default=30_000,
                         help="reclaim entries pending this long for another consumer")
    consume.add_argument("--batch", type=int, default=500, help="entries read per call")
    consume.add_argument("--start-id", default="0", help="where a new group starts (0 or $)")
    consume.add_argument("--max-idle", type=float, default=None,
                         help="exit after this many seconds without new entries")
    consume.set_defaults(func=_consume)

    verify = sub.add_parser("verify", help="check every writer's hash chain; exit 1 if broken")
    _source_args(verify)
    verify.add_argument("--hmac-key-file", default=None,
                        help="also check every event's and head's HMAC with this key")
    verify.add_argument("--json", action="store_true", help="print a JSON summary")
    verify.set_defaults(func=_verify)

    show = sub.add_parser("show", help="print the governance envelope of one decision")
    show.add_argument("decision_id", help="the decision_id an Evaluate answered")
    _source_args(show)
    show.add_argument("--json", action="store_true", help="print the envelope as JSON")
    show.set_defaults(func=_show)

    replay = subparsers.add_parser("replay", help="re-decide recorded decisions under a candidate")
    replay.add_argument("--policy", required=True, help="the candidate policy")
    replay.add_argument("--audit-dir", "--audit", dest="audit_dir", default=DEFAULT_AUDIT_DIR,
                        help="the audit directory to replay (--audit is an alias)")
    replay.add_argument("--redis-url", default=None, help="read the Redis stream instead")
    replay.add_argument("--audit-stream", default=DEFAULT_STREAM, help="the Redis audit stream")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(func=_replay)


def _source_args(p: argparse.ArgumentParser, server: bool = False) -> None:
    p.add_argument("--audit-dir", default=DEFAULT_AUDIT_DIR,
                   help="a directory of audit segments (what `proctor serve --audit-dir` wrote)")
    p.add_argument("--redis-url", default=None, help="read the Redis stream instead")
    p.add_argument("--audit-stream", default=DEFAULT_STREAM, help="the Redis audit stream")
    if server:
        p.add_argument("--server", default=None, help="HOST:PORT: Audit.StreamDecisions")
        client_flags.add_arguments(p)  # --token-file ($PROCTOR_TOKEN), --tls-ca/-cert/-key


def _need_source(args: argparse.Namespace) -> str | None:
    """None when there is something to read, else what to give instead."""
    if args.redis_url or getattr(args, "server", None) or Path(args.audit_dir).is_dir():
        return None
    other = " or --server HOST:PORT" if hasattr(args, "server") else ""
    return (f"no audit directory at {args.audit_dir} (run it where `proctor serve` ran, or "
            f"give --audit-dir DIR, --redis-url URL{other})")


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
                if flt.match(it.event) and _in_run(it.event, args.run_id):
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


def _in_run(ev: dict[str, Any], run_id: str) -> bool:
    return not run_id or ev.get("run_id") == run_id


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
    with client_flags.open_channel(args.server, args) as ch:
        stub = audit_pb2_grpc.AuditStub(ch)
        try:
            for msg in stub.StreamDecisions(req):
                ev = json.loads(msg.record_json) if msg.record_json else {}
                ev["hash"] = msg.hash
                if msg.hmac:
                    ev["hmac"] = msg.hmac
                last = msg.cursor
                if _in_run(ev, args.run_id):
                    _emit(ev, args.json)
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


# ---- replay ---------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    err = _need_source(args)
    if err:
        print(f"proctor replay: {err}", file=sys.stderr)
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
