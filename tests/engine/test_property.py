"""The compiled engine agrees with a linear reference evaluator on random policies."""

from __future__ import annotations

import random

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor.engine import Request, compile_policy
from tests.engine.generators import random_policy, random_request
from tests.engine.reference import reference_decide


def _check(policy_dict: dict, requests: list[dict]) -> None:
    text = yaml.safe_dump(policy_dict, sort_keys=False)
    compiled = compile_policy(text, "random.yaml")
    for req in requests:
        want = reference_decide(policy_dict, req)
        request = Request(**req)
        got = compiled.evaluate(request, explain=True)
        context = f"\npolicy:\n{text}\nrequest: {req}"
        assert got.decision == want["decision"], context
        assert got.rule_id == want["rule_id"], context
        assert list(got.matched_rule_ids) == want["matched_rule_ids"], context
        assert list(got.derived_tags) == want["derived_tags"], context
        if "reason" in want:
            assert got.reason == want["reason"], context
        plain = compiled.evaluate(request)
        assert (plain.decision, plain.rule_id) == (got.decision, got.rule_id), context
        assert plain.matched_rule_ids == ()
        assert plain.derived_tags == got.derived_tags


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 12))
def test_engine_agrees_with_reference(seed: int, size: int) -> None:
    r = random.Random(seed)
    policy = random_policy(r, size)
    requests = [random_request(r, policy) for _ in range(25)]
    _check(policy, requests)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_engine_agrees_with_reference_on_larger_policies(seed: int) -> None:
    r = random.Random(seed)
    policy = random_policy(r, 150)
    requests = [random_request(r, policy) for _ in range(150)]
    _check(policy, requests)


def test_both_combining_modes_are_covered() -> None:
    r = random.Random(7)
    for combining in ("deny_overrides", "first_match"):
        for _ in range(30):
            policy = random_policy(r, 10)
            policy["combining"] = combining
            _check(policy, [random_request(r, policy) for _ in range(30)])
