"""Could this caller ever be allowed this topic? A side-effect-free question about a policy.

`never_allowed(policy, request)` answers, for the request's topic, delegation
path and tenant, whether *every* request with them is denied, whatever risk
tags and labels it carries. It returns the deny decision that proves it, or
None when some tags or labels might lead to allow or require_approval.

Why one evaluation suffices: no condition of the language is negative. A
rule's tag conditions (`risk_tags` any-of, `risk_tags_all`) and its `labels`
only ever hold for *more* requests as tags and labels are added; the topic,
the path and the tenant are fixed here. So the rules matching the request
with no caller tags and no labels (derived tags still apply) match every
request of that topic, path and tenant. Then:

- `delegation.max_depth` denies before any rule: never allowed.
- `deny_overrides`: a deny rule among them wins whatever else matches:
  never allowed.
- `first_match`: the winner stays matched; only an earlier rule could take its
  place. When every earlier rule is a deny, none can turn it into allow:
  never allowed.
- The default (no rule matched): tags or labels might make a rule match, so
  the answer is None (possibly allowed). Sound, not complete: a tool whose only
  non-deny rules need tags the caller never sends is still listed.
"""

from __future__ import annotations

from .evaluate import CompiledPolicy
from .model import DEFAULT_RULE_ID, DENY, MAX_DEPTH_RULE_ID, Decision
from .request import Request


def never_allowed(policy: CompiledPolicy, request: Request) -> Decision | None:
    """The deny every request of this topic, path and tenant gets, or None (see the module)."""
    bare = Request(topic=request.topic, delegation_path=request.delegation_path,
                   tenant=request.tenant, run_id=request.run_id)
    decision = policy.evaluate(bare)
    if decision.decision != DENY or decision.rule_id == DEFAULT_RULE_ID:
        return None
    if decision.rule_id == MAX_DEPTH_RULE_ID or policy.combining != "first_match":
        return decision
    for rule in policy.rules:
        if rule.id == decision.rule_id:
            return decision
        if rule.decision != DENY:
            return None
    return None
