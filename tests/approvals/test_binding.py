"""The action hash: the same action hashes the same; anything else is another action."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.approvals.binding import action_hash, action_text, normalize_tags

BASE = {
    "tenant": "acme", "run_id": "run-42", "delegation_path": ["orchestrator", "agent-c"],
    "topic": "job.42.send.email", "risk_tags": ["external", "pii"], "derived_tags": [],
    "labels": {"data": "customer-emails"},
}


def h(**changes: object) -> str:
    return action_hash(**{**BASE, **changes})  # type: ignore[arg-type]


def test_canonical_json_sha256() -> None:
    doc = {"v": "v1", "tenant": "acme", "run_id": "run-42",
           "delegation_path": ["orchestrator", "agent-c"], "topic": "job.42.send.email",
           "tags": ["external", "pii"], "labels": {"data": "customer-emails"}}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    assert h() == hashlib.sha256(text.encode()).hexdigest()


def test_tags_are_normalized_and_united_with_derived_ones() -> None:
    assert h(risk_tags=[" PII", "External", "pii", ""]) == h()
    assert h(risk_tags=["pii"], derived_tags=["external"]) == h()


def test_every_part_of_the_action_counts() -> None:
    others = [
        h(tenant="globex"), h(run_id="run-43"), h(topic="job.42.send.sms"),
        h(delegation_path=["agent-c", "orchestrator"]), h(delegation_path=["agent-c"]),
        h(risk_tags=["external"]), h(labels={}), h(labels={"data": "all"}),
    ]
    assert h() not in others and len(set(others)) == len(others)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(tenant=_text, run_id=_text, topic=_text, path=st.lists(_text, max_size=4),
       tags=st.lists(_text, max_size=4), derived=st.lists(_text, max_size=3),
       labels=st.one_of(st.none(), st.dictionaries(_text, _text, max_size=4)))
def test_action_text_is_the_canonical_json_of_the_action(
    tenant: str, run_id: str, topic: str, path: list[str], tags: list[str],
    derived: list[str], labels: dict[str, str] | None,
) -> None:
    doc = {"v": "v1", "tenant": tenant, "run_id": run_id, "delegation_path": path,
           "topic": topic, "tags": normalize_tags([*tags, *derived]), "labels": labels or {}}
    expected = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert action_text(tenant=tenant, run_id=run_id, delegation_path=path, topic=topic,
                       risk_tags=tags, derived_tags=derived, labels=labels) == expected
