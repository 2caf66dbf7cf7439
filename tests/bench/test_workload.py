"""The workload: a generated mix that reaches every rule, JSON-lines files, payload splicing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from proctor.bench import workload
from proctor.engine import Request, compile_policy, load_policy
from proctor.v1 import budgets_pb2, decisions_pb2

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"


def _decide(policy, obj):  # type: ignore[no-untyped-def]
    return policy.evaluate(Request(
        topic=obj["topic"], risk_tags=obj["risk_tags"], delegation_path=obj["delegation_path"],
        tenant=obj["tenant"], labels=obj["labels"] or None))


def test_generated_mix_reaches_every_rule_and_the_default() -> None:
    policy = load_policy(SEED)
    reqs = workload.generate_requests(policy, 400)
    rules = Counter(_decide(policy, r).rule_id for r in reqs)
    assert set(rules) == {r.id for r in policy.rules} | {"default"}
    assert len({r["request_id"] for r in reqs}) == 400
    assert workload.generate_requests(policy, 400) == reqs  # deterministic


def test_generated_mix_satisfies_richer_conditions() -> None:
    policy = compile_policy("""\
version: v1
rules:
  - id: deep
    match: {topics: ["a.**.z"], agents: ["etl-*"], chain: ["root-*"], tenants: ["acme"],
            depth: {min: 3, max: 4}, labels: {env: [prod]}, risk_tags_all: [pii, bulk]}
    decision: deny
    reason: "x"
""")
    reqs = workload.generate_requests(policy, 50)
    hits = [r for r in reqs if _decide(policy, r).rule_id == "deep"]
    assert len(hits) >= 30


def test_jsonl_workload(tmp_path: Path) -> None:
    f = tmp_path / "w.jsonl"
    f.write_text('{"topic": "job.1.send.email", "delegation_path": ["a"], "labels": {"k": "v"}}'
                 '\n\n{"topic": "job.2.read.pii", "delegation_path": ["a", "b"]}\n')
    reqs = workload.read_jsonl(f)
    plan = workload.build_plan("evaluate", reqs, units=[])
    msg = decisions_pb2.EvaluateRequest.FromString(plan.ops[0].payloads[0])
    assert msg.topic == "job.1.send.email" and dict(msg.labels) == {"k": "v"}
    f.write_text('{"topic": "x", "colour": "red"}\n')
    with pytest.raises(workload.WorkloadError, match="1: unknown field.*colour"):
        workload.read_jsonl(f)
    f.write_text('{"topic": \n')
    with pytest.raises(workload.WorkloadError, match="not JSON"):
        workload.read_jsonl(f)


def test_reservation_id_is_spliced_into_the_template() -> None:
    policy = load_policy(SEED)
    reqs = workload.generate_requests(policy, 10)
    plan = workload.build_plan("reserve", reqs, units=["tokens"], reserve_ttl=7)
    op = plan.ops[0]
    assert op.fresh_reservation_id
    msg = budgets_pb2.ReserveBudgetRequest.FromString(
        workload.reservation_prefix("abc-1-42") + op.payloads[0])
    assert msg.reservation_id == "abc-1-42"
    assert msg.unit == "tokens" and msg.amount == 1 and msg.ttl_seconds == 7


def test_reserve_without_budgets_is_refused_and_augmentation_adds_one() -> None:
    policy = load_policy(SEED)
    reqs = workload.generate_requests(policy, 10)
    with pytest.raises(workload.WorkloadError, match="needs a policy with budgets"):
        workload.build_plan("reserve", reqs, units=workload.budget_units(policy))
    augmented = compile_policy(workload.augmented_policy_text(SEED.read_text()))
    assert workload.budget_units(augmented) == [workload.BENCH_UNIT]
    assert len(augmented.rules) == len(policy.rules)


def test_mix_weights_and_batches() -> None:
    policy = load_policy(SEED)
    reqs = workload.generate_requests(policy, 250)
    plan = workload.build_plan("mix", reqs, units=["tokens"], batch_size=50)
    names = Counter(plan.ops[i].name for i in plan.schedule)
    assert names == {"evaluate": 8, "batch": 1, "reserve": 1}
    batch = next(op for op in plan.ops if op.name == "batch")
    first = decisions_pb2.EvaluateBatchRequest.FromString(batch.payloads[0])
    assert len(first.requests) == 50
