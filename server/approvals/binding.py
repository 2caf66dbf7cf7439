"""The action hash: what binds an approval to the exact action it was asked for.

DESIGN section 5: SHA-256 over canonical JSON (sorted keys, no spaces, UTF-8)
of the tenant, the run, the delegation path (in order), the topic, the sorted
normalized tags with the derived ones, and the labels. The request tags are
normalized as the engine does (trimmed, lower-cased, empty ones dropped), then
united with `derive_tags`' tags, de-duplicated and sorted, so the same action
hashes the same whether a tag came from the agent or was derived, in any
order or case. request_id, approval_id and explain are not part of the action.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

HASH_VERSION = "v1"


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Trimmed, lower-cased, non-empty, de-duplicated, sorted."""
    return sorted({t.strip().lower() for t in tags if t.strip()})


def action_hash(
    *,
    tenant: str,
    run_id: str,
    delegation_path: Sequence[str],
    topic: str,
    risk_tags: Iterable[str],
    derived_tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
) -> str:
    """Hex SHA-256 of the canonical JSON of the action."""
    doc = {
        "v": HASH_VERSION,
        "tenant": tenant,
        "run_id": run_id,
        "delegation_path": list(delegation_path),
        "topic": topic,
        "tags": normalize_tags([*risk_tags, *derived_tags]),
        "labels": dict(labels or {}),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
