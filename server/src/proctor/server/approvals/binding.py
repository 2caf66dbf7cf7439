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
import json.encoder
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

HASH_VERSION = "v1"
_quote = json.encoder.encode_basestring  # the escaping json.dumps(ensure_ascii=False) uses


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Trimmed, lower-cased, non-empty, de-duplicated, sorted."""
    return sorted({t.strip().lower() for t in tags if t.strip()})


def action_hash(**action: Any) -> str:
    """Hex SHA-256 of action_text(**action): the action's canonical JSON."""
    return hashlib.sha256(action_text(**action).encode("utf-8")).hexdigest()


def action_text(
    *,
    tenant: str,
    run_id: str,
    delegation_path: Sequence[str],
    topic: str,
    risk_tags: Iterable[str],
    derived_tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
) -> str:
    """The canonical JSON the action hash covers.

    Written by a template in sorted key order (every require_approval decision hashes
    its action): the same text as json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False) of the document, which a property test holds it to; any value
    that is not a string falls back to json.dumps itself.
    """
    tags = normalize_tags([*risk_tags, *derived_tags])
    label_map = dict(labels or {})
    q = _quote
    try:
        label_text = ",".join([q(k) + ":" + q(v) for k, v in sorted(label_map.items())])
        return (
            f'{{"delegation_path":[{",".join(map(q, delegation_path))}],'
            f'"labels":{{{label_text}}},"run_id":{q(run_id)},"tags":[{",".join(map(q, tags))}],'
            f'"tenant":{q(tenant)},"topic":{q(topic)},"v":"{HASH_VERSION}"}}'
        )
    except TypeError:
        doc = {
            "v": HASH_VERSION, "tenant": tenant, "run_id": run_id,
            "delegation_path": list(delegation_path), "topic": topic, "tags": tags,
            "labels": label_map,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
