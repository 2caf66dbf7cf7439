"""The seed policy (examples/safety.yaml) and its accountability chain."""

from __future__ import annotations

from pathlib import Path

import yaml

from proctor.engine import Request, load_policy
from proctor.engine.suites import load_suite, run_suite

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"

DESIGN_SEED = """\
version: v1
rules:
  - id: allow-internal-delegation
    match: {topics: ["job.*.delegate.internal"], risk_tags: []}
    decision: allow
    reason: "Internal agent delegation is safe"
  - id: approve-data-access
    match: {topics: ["job.*.read.customer-data", "job.*.read.pii"], risk_tags: ["pii", "customer-data"]}
    decision: require_approval
    reason: "Customer data access requires review"
  - id: approve-external-action
    match: {topics: ["job.*.send.*", "job.*.export.*", "job.*.publish.*"], risk_tags: ["external"]}
    decision: require_approval
    reason: "External actions from any agent need approval"
  - id: deny-bulk-export
    match: {topics: ["job.*.export.bulk", "job.*.download.all"], risk_tags: ["bulk-data", "exfiltration-risk"]}
    decision: deny
    reason: "Bulk data export blocked regardless of delegation path"
"""  # noqa: E501


def test_seed_is_verbatim() -> None:
    assert SEED.read_text() == DESIGN_SEED


def test_accountability_chain() -> None:
    policy = load_policy(SEED)
    chain = ["orchestrator-a"]

    # A delegates to B internally: allowed.
    d = policy.evaluate(Request(topic="job.4711.delegate.internal", delegation_path=chain))
    assert (d.decision, d.rule_id) == ("allow", "allow-internal-delegation")
    assert d.reason == "Internal agent delegation is safe"
    chain = [*chain, "analyst-b"]

    # B reads PII: needs approval.
    d = policy.evaluate(
        Request(topic="job.4711.read.pii", risk_tags=["PII"], delegation_path=chain),
        explain=True,
    )
    assert (d.decision, d.rule_id) == ("require_approval", "approve-data-access")
    assert d.matched_rule_ids == ("approve-data-access",)
    chain = [*chain, "mailer-c"]

    # C, two hops down, sends customer emails externally: needs approval.
    d = policy.evaluate(
        Request(
            topic="job.4711.send.customer-email",
            risk_tags=["external", "customer-data"],
            delegation_path=chain,
            tenant="acme",
        )
    )
    assert (d.decision, d.rule_id) == ("require_approval", "approve-external-action")
    assert d.reason == "External actions from any agent need approval"

    # Bulk export: denied, although the external-action rule matches too.
    d = policy.evaluate(
        Request(
            topic="job.4711.export.bulk",
            risk_tags=["bulk-data", "external"],
            delegation_path=[*chain, "exporter-d"],
        ),
        explain=True,
    )
    assert (d.decision, d.rule_id) == ("deny", "deny-bulk-export")
    assert d.matched_rule_ids == ("approve-external-action", "deny-bulk-export")
    assert d.policy_version == policy.policy_version


def test_seed_suite_passes() -> None:
    policy = load_policy(SEED)
    suite = SEED.with_name("safety.tests.yaml")
    cases = load_suite(suite.read_text(), str(suite))
    assert len(cases) >= 8
    assert run_suite(policy, cases) == []


def test_seed_suite_is_valid_yaml_with_tests_key() -> None:
    data = yaml.safe_load(SEED.with_name("safety.tests.yaml").read_text())
    assert set(data) == {"tests"}
