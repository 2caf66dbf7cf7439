"""The preflight of a bench run: a sample of the workload sent once, one call at a time.

It checks the server answers, learns the real response sizes (the floor's
echo answers with them) and the decision mix, and counts the answers that
differ from the engine's own decision on the same policy.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc

from proctor.client import credentials
from proctor.client._base import bearer_metadata
from proctor.v1 import decisions_pb2

from .loop import BenchError
from .spawn import free_port
from .workload import engine_decision, reservation_prefix

_DECISIONS = {v.number: v.name.removeprefix("DECISION_").lower()
              for v in decisions_pb2.Decision.DESCRIPTOR.values}


def preflight(address: str, plan: Any, timeout: float = 10.0, sample: int = 200) -> dict[str, Any]:
    """Each op's first payloads once, one at a time: errors, decisions, mean response sizes."""
    sizes: dict[str, list[int]] = {}
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    in_order: list[str] = []
    calls = ok = 0
    metadata = bearer_metadata()
    with grpc.insecure_channel(address) as raw:
        ch = grpc.intercept_channel(raw, credentials.with_metadata(metadata)) if metadata \
            else raw
        try:
            grpc.channel_ready_future(raw).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise BenchError(f"nothing answers on {address}") from None
        for op in plan.ops:
            if op.streaming:
                _preflight_stream(ch, op, sample, timeout, sizes, errors, decisions, in_order)
                calls += min(sample, len(op.payloads))
                ok += len(sizes.get(op.name, ()))
                continue
            call = ch.unary_unary(op.method)
            for n, payload in enumerate(op.payloads[:sample]):
                if op.fresh_reservation_id:
                    payload = reservation_prefix(f"preflight-{free_port()}-{n}") + payload
                calls += 1
                try:
                    reply = call(payload, timeout=timeout)
                except grpc.RpcError as e:
                    errors[f"{op.name}:{e.code().name}"] += 1
                    continue
                ok += 1
                sizes.setdefault(op.name, []).append(len(reply))
                if op.name == "evaluate":
                    resp = decisions_pb2.EvaluateResponse.FromString(reply)
                    name = _DECISIONS.get(resp.decision, str(resp.decision))
                    decisions[name] += 1
                    in_order.append(name)
    return {
        "calls": calls, "ok": ok, "errors": dict(errors),
        "decisions": dict(sorted(decisions.items())), "in_order": in_order,
        "response_bytes": {k: round(sum(v) / len(v)) for k, v in sizes.items()},
    }


def _preflight_stream(ch: grpc.Channel, op: Any, sample: int, timeout: float,
                      sizes: dict[str, list[int]], errors: Counter[str],
                      decisions: Counter[str], in_order: list[str]) -> None:
    """A streaming op's sample sent on one stream: each answer is an EvaluateBatchItem."""
    stream = ch.stream_stream(op.method)
    try:
        for reply in stream(iter(op.payloads[:sample]), timeout=timeout):
            item = decisions_pb2.EvaluateBatchItem.FromString(reply)
            if item.HasField("error"):
                errors[f"{op.name}:item {item.error.code}"] += 1
                continue
            sizes.setdefault(op.name, []).append(len(reply))
            name = _DECISIONS.get(item.response.decision, str(item.response.decision))
            decisions[name] += 1
            in_order.append(name)
    except grpc.RpcError as e:
        errors[f"{op.name}:{e.code().name}"] += 1


def engine_mismatches(policy: Any, requests: list[dict[str, Any]],
                      answered: list[str]) -> int | None:
    """How many preflight answers differ from the engine's decision (None: no policy, or
    the answers cannot be lined up because some calls failed)."""
    if policy is None or not answered or len(answered) != min(len(requests), 200):
        return None
    bad = 0
    for obj, got in zip(requests, answered, strict=False):
        want = engine_decision(policy, obj)
        if want == "invalid":
            continue
        # a presented, granted approval turns require_approval into allow (DESIGN section 5)
        if want != got and not (obj.get("approval_id") and want == "require_approval"):
            bad += 1
    return bad
