"""What the load processes send: requests from a policy's generated mix or a JSON-lines file.

A `Plan` is a list of `Op`s (evaluate, batch, reserve), each with the gRPC
method and pre-serialized payloads that a load process cycles through, and a
schedule of op indices (weights) for the mix. Everything is bytes, so the load
processes never build a protobuf on the hot path; a reservation only gets a
fresh `reservation_id` spliced in front of its pre-serialized template.

The generated mix aims most requests at one rule of the policy (a concrete
topic for one of its patterns, the tags, agents, tenant, depth and labels it
names) and the rest at nothing (the default). Request ids are fixed per
request, so a repeated `require_approval` request finds its pending approval
(DESIGN section 5) instead of creating one per call.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proctor.v1 import budgets_pb2, decisions_pb2

EVALUATE = "/proctor.v1.Decisions/Evaluate"
BATCH = "/proctor.v1.Decisions/EvaluateBatch"
RESERVE = "/proctor.v1.Budgets/ReserveBudget"
STREAM = "/proctor.v1.Decisions/EvaluateStream"
TARGETS = ("evaluate", "stream", "batch", "reserve", "mix")
MIX_WEIGHTS = {"evaluate": 8, "batch": 1, "reserve": 1}
BENCH_UNIT = "bench-calls"
_REQUEST_FIELDS = {f.name for f in decisions_pb2.EvaluateRequest.DESCRIPTOR.fields}
_TOKENS = ("42", "7", "1337", "a1", "etl", "r9", "x", "2026")
_MISS_VERBS = ("noop", "ping", "list", "stat")


class WorkloadError(ValueError):
    """A workload that cannot be built (bad file, no budgets for reserve, ...)."""


@dataclass
class Op:
    """One kind of call: its gRPC method and the payloads cycled through."""

    name: str
    method: str
    payloads: list[bytes]
    fresh_reservation_id: bool = False  # splice a unique reservation_id (field 1) per call
    weight: int = 1
    # A bidirectional stream (EvaluateStream): each load channel holds one open stream and
    # every call is one message on it, answered in order.
    streaming: bool = False

    def with_method(self, method: str) -> Op:
        return Op(self.name, method, self.payloads, self.fresh_reservation_id, self.weight,
                  self.streaming)


@dataclass
class Plan:
    ops: list[Op]
    schedule: list[int] = field(default_factory=list)  # op indices, cycled: the mix
    request_bytes: dict[str, float] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.schedule:
            order = [i for i, op in enumerate(self.ops) for _ in range(op.weight)]
            random.Random(7).shuffle(order)
            self.schedule = order
        for op in self.ops:
            sizes = [len(p) for p in op.payloads]
            self.request_bytes[op.name] = round(sum(sizes) / max(1, len(sizes)), 1)

    def with_methods(self, methods: dict[str, str]) -> Plan:
        """The same plan sent to other methods (the echo floor)."""
        ops = [op.with_method(methods[op.name]) for op in self.ops]
        return Plan(ops, list(self.schedule), dict(self.request_bytes), self.description)


def stream_plan(plan: Plan) -> Plan | None:
    """The plan's Evaluate requests as messages on EvaluateStream (None when it sends no
    Evaluate): the same requests, on a bidirectional stream per load channel."""
    evaluate = next((op for op in plan.ops if op.name == "evaluate"), None)
    if evaluate is None:
        return None
    return Plan([Op("stream", STREAM, evaluate.payloads, streaming=True)],
                description=plan.description)


def reservation_prefix(reservation_id: str) -> bytes:
    """Field 1 (reservation_id) of ReserveBudgetRequest, encoded; protobuf takes any order."""
    raw = reservation_id.encode()
    if len(raw) > 127:
        raise ValueError("reservation id too long")
    return b"\x0a" + bytes([len(raw)]) + raw


# -- requests ---------------------------------------------------------------------------------


def _concrete_topic(pattern: str, rng: random.Random) -> str:
    out: list[str] = []
    for seg in pattern.split("."):
        if seg == "*":
            out.append(rng.choice(_TOKENS))
        elif seg == "**":
            out.extend(rng.choice(_TOKENS) for _ in range(rng.randint(0, 2)))
        else:
            out.append(seg)
    return ".".join(out or ["job"])


def _from_glob(glob: str, filler: str) -> str:
    return glob.replace("*", filler) or filler


def _request_for_rule(rule: Any, rng: random.Random, n: int) -> dict[str, Any]:
    m = rule.match
    path = ["orchestrator", "research-agent", f"worker-{n % 17}"]
    if m.chain:
        path[0] = _from_glob(rng.choice(m.chain), "root")
    if m.agents:
        path[-1] = _from_glob(rng.choice(m.agents), f"a{n % 5}")
    depth = len(path) - 1
    lo = m.depth_min if m.depth_min is not None else 0
    hi = m.depth_max if m.depth_max is not None else max(depth, lo)
    want = min(max(depth, lo), hi)
    while len(path) - 1 < want:
        path.insert(-1, f"hop-{len(path)}")
    while len(path) - 1 > want and len(path) > 1:
        path.pop(len(path) - 2 if len(path) > 2 else 0)
    tags: list[str] = list(m.risk_tags_all)
    if m.risk_tags:
        tags.append(rng.choice(m.risk_tags))
    if rng.random() < 0.3:
        tags.append(rng.choice(("internal", "low-risk", "batch-job")))
    tenant = _from_glob(rng.choice(m.tenants), "t1") if m.tenants else rng.choice(
        ("acme", "globex", "initech")
    )
    labels = {key: rng.choice(values) for key, values in m.labels}
    if not labels and rng.random() < 0.5:
        labels = {"env": rng.choice(("prod", "staging"))}
    return {
        "topic": _concrete_topic(rng.choice(m.topics), rng),
        "delegation_path": path,
        "risk_tags": sorted(set(tags)),
        "tenant": tenant,
        "labels": labels,
    }


def _miss(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "topic": f"job.{rng.choice(_TOKENS)}.{rng.choice(_MISS_VERBS)}.thing",
        "delegation_path": ["orchestrator", f"worker-{n % 17}"],
        "risk_tags": [],
        "tenant": rng.choice(("acme", "globex")),
        "labels": {},
    }


def generate_requests(policy: Any, count: int = 1000, seed: int = 1) -> list[dict[str, Any]]:
    """A deterministic mix: ~85% aimed at one rule each (round robin), the rest at no rule."""
    rng = random.Random(seed)
    rules = list(policy.rules)
    out = []
    for n in range(count):
        if rules and rng.random() < 0.85:
            req = _request_for_rule(rules[n % len(rules)], rng, n)
        else:
            req = _miss(rng, n)
        req["request_id"] = f"bench-{seed}-{n:06d}"
        req["run_id"] = f"run-{n % 97}"
        out.append(req)
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Requests, one JSON object per line with the fields of EvaluateRequest."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{path}:{lineno}: not JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise WorkloadError(f"{path}:{lineno}: expected a JSON object")
            unknown = set(obj) - _REQUEST_FIELDS
            if unknown:
                raise WorkloadError(
                    f"{path}:{lineno}: unknown field(s) {', '.join(sorted(unknown))}; "
                    f"EvaluateRequest has {', '.join(sorted(_REQUEST_FIELDS))}"
                )
            out.append(obj)
    if not out:
        raise WorkloadError(f"{path}: no requests")
    return out


def to_message(obj: dict[str, Any]) -> decisions_pb2.EvaluateRequest:
    try:
        return decisions_pb2.EvaluateRequest(**obj)
    except (TypeError, ValueError) as e:
        raise WorkloadError(f"bad request {obj!r}: {e}") from None


def engine_decision(policy: Any, obj: dict[str, Any]) -> str:
    """The engine's decision for one request object ("invalid" when it breaks a limit)."""
    from proctor.engine import Request, RequestError

    try:
        req = Request(
            topic=obj.get("topic", ""),
            risk_tags=obj.get("risk_tags", ()),
            delegation_path=obj.get("delegation_path", ()),
            tenant=obj.get("tenant", ""),
            run_id=obj.get("run_id", ""),
            request_id=obj.get("request_id", ""),
            labels=obj.get("labels") or None,
        )
    except RequestError:
        return "invalid"
    return str(policy.evaluate(req).decision)


def local_decisions(policy: Any, requests: list[dict[str, Any]]) -> dict[str, int]:
    """The decision mix the engine gives the workload (what the server should answer)."""
    counts = Counter(engine_decision(policy, obj) for obj in requests)
    return dict(sorted(counts.items()))


# -- the plan ---------------------------------------------------------------------------------


def budget_units(policy: Any) -> list[str]:
    seen: list[str] = []
    for b in getattr(policy, "budgets", ()):
        if b.unit not in seen:
            seen.append(b.unit)
    return seen


def augmented_policy_text(text: str) -> str:
    """The policy with one huge tenant budget of unit `bench-calls` added (for reserve)."""
    import yaml

    doc = yaml.safe_load(text)
    doc.setdefault("budgets", [])
    doc["budgets"].append(
        {"id": "bench-calls", "unit": BENCH_UNIT, "limit": 10**15, "window": "none",
         "scope": "tenant"}
    )
    return str(yaml.safe_dump(doc, sort_keys=False))


def build_plan(
    target: str,
    requests: list[dict[str, Any]],
    *,
    units: list[str],
    batch_size: int = 100,
    reserve_ttl: int = 5,
) -> Plan:
    """The ops of a target over these requests; reserve needs at least one budget unit."""
    if target not in TARGETS:
        raise WorkloadError(f"unknown target {target!r}; one of {', '.join(TARGETS)}")
    messages = [to_message(obj) for obj in requests]
    evaluate = Op("evaluate", EVALUATE, [m.SerializeToString() for m in messages])
    size = max(1, min(batch_size, 1000))
    batches = []
    for start in range(0, max(len(messages), size), size):
        items = [messages[(start + i) % len(messages)] for i in range(size)]
        batches.append(decisions_pb2.EvaluateBatchRequest(requests=items).SerializeToString())
        if len(batches) >= 64:
            break
    batch = Op("batch", BATCH, batches)
    ops: list[Op] = []
    if target in ("evaluate", "mix"):
        ops.append(evaluate)
    if target == "stream":
        ops.append(Op("stream", STREAM, evaluate.payloads, streaming=True))
    if target in ("batch", "mix"):
        ops.append(batch)
    if target in ("reserve", "mix"):
        if not units:
            if target == "reserve":
                raise WorkloadError(
                    "--target reserve needs a policy with budgets: add a `budgets:` section, "
                    "or use --spawn (which adds a bench budget to a policy that has none)"
                )
        else:
            templates = []
            for i, obj in enumerate(requests[:64]):
                path = list(obj.get("delegation_path") or ["agent"])
                templates.append(
                    budgets_pb2.ReserveBudgetRequest(
                        tenant=str(obj.get("tenant") or "acme"),
                        agent_id=str(path[-1]),
                        run_id=str(obj.get("run_id") or f"run-{i}"),
                        unit=units[i % len(units)],
                        amount=1,
                        ttl_seconds=reserve_ttl,
                    ).SerializeToString()
                )
            ops.append(Op("reserve", RESERVE, templates, fresh_reservation_id=True))
    if target == "mix":
        for op in ops:
            op.weight = MIX_WEIGHTS[op.name]
    description = {
        "requests": len(requests),
        "batch_size": size if target in ("batch", "mix") else None,
        "reserve_units": units if any(op.name == "reserve" for op in ops) else [],
        "ops": {op.name: op.weight for op in ops},
    }
    return Plan(ops, description=description)
