"""CompiledPolicy: one immutable snapshot of a policy, ready to decide requests.

evaluate() walks the topic automaton once (one dict lookup per segment), ORs
the bundle's tag masks for the request's tags into the bundle's base mask, and
reads the winner from the decision masks by lowest set bit, checking the
remaining conditions of a candidate only when it has any (see compiler.py).
The bundles are read in their Packed form (engine.rules), laid out by
engine.layout. Decisions for the common cases (no explain; no derived tag, or
exactly the derived tags of the state the walk ends in) are built once at
compile time and shared.
"""

from __future__ import annotations

from proctor.engine.compiler import Automaton
from proctor.engine.layout import pack_in_place, relocate
from proctor.engine.model import (
    DEFAULT_RULE_ID,
    DENY,
    DENY_OVERRIDES,
    MAX_DEPTH_RULE_ID,
    REQUIRE_APPROVAL,
    Budget,
    Decision,
    Policy,
    Rule,
)
from proctor.engine.request import Request
from proctor.engine.rules import (
    BASE,
    DECISION,
    DERIVED,
    DERIVED_DECISION,
    FIRST_RULE,
    ORDER,
    PLAIN,
    RULES,
    TAGMASK,
    Packed,
)
from proctor.engine.states import Globs


class CompiledPolicy:
    """A compiled policy snapshot. Never changes after construction (but for its caches)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.policy_version = policy.policy_version
        self.source = policy.source
        self.text = policy.text
        self.combining = policy.combining
        self.rules: tuple[Rule, ...] = policy.rules
        self.rule_count = len(policy.rules)
        self.budgets: tuple[Budget, ...] = policy.budgets
        self._by_id = {r.id: r for r in policy.rules}
        pv = policy.policy_version

        def make_decision(index: int) -> Decision:
            r = policy.rules[index]
            return Decision(
                decision=r.decision,
                rule_id=r.id,
                reason=r.reason,
                policy_version=pv,
                approvers=r.approvers if r.decision == REQUIRE_APPROVAL else (),
                approval_ttl_seconds=r.approval_ttl_seconds,
            )

        self._auto = Automaton(policy)
        self._complete = self._auto.complete
        made: dict[int, Decision] = {}
        if self._complete:
            # Decisions are made while the automaton is laid out: next to the states using them.
            self._start, made = relocate(self._auto, make_decision, self._with_derived)
        else:
            pack_in_place(self._auto, made, make_decision)
            self._start = self._auto.start
        self._decisions = tuple(made.get(i) or make_decision(i) for i in range(len(policy.rules)))
        self._max_depth = policy.max_depth
        self._rule_ids = tuple(r.id for r in policy.rules)
        strength = {DENY: 2, REQUIRE_APPROVAL: 1}
        self._rank = tuple(strength.get(r.decision, 0) for r in policy.rules)
        d = policy.default
        self._default = Decision(
            decision=d.decision,
            rule_id=DEFAULT_RULE_ID,
            reason=d.reason,
            policy_version=pv,
            approval_ttl_seconds=d.approval_ttl_seconds,
        )
        # Decisions that carry derived tags, shared per (rule, derived tags); bounded.
        self._derived_decisions: dict[tuple[int, tuple[str, ...]], Decision] = {}
        self._sorted_tags: dict[frozenset[str], tuple[str, ...]] = {}

    def rule(self, rule_id: str) -> Rule | None:
        return self._by_id.get(rule_id)

    def __repr__(self) -> str:
        return (
            f"<CompiledPolicy {self.source} version={self.policy_version} "
            f"rules={self.rule_count} combining={self.combining}>"
        )

    # -- deciding ------------------------------------------------------------------------------

    def evaluate(self, request: Request, explain: bool = False) -> Decision:
        """Decide request; with explain, matched_rule_ids lists every matching rule."""
        segs = request.topic.split(".")
        more: tuple[Packed, ...] = ()
        if self._complete:
            # Every state has every transition: one lookup per segment.
            state = self._start
            for seg in segs:
                state = state.trans.get(seg) or state.other  # type: ignore[assignment]
            node = state.node
            derived = state.derived
            globs = state.globs
        else:
            node, more, derived, globs = self._walk(segs)
        if globs:  # open '**' nodes: match their suffix tries against the topic's tail
            last = len(segs) - 1
            for trans, other, before in globs:
                i = last
                while i >= before and (sfx := trans.get(segs[i]) or other) is not None:
                    if sfx.node is not None:
                        if node is None and not more:
                            node = sfx.node
                        else:
                            more = (*more, sfx.node)
                    if sfx.derived:
                        derived = derived | sfx.derived
                    trans = sfx.trans
                    other = sfx.other
                    i -= 1

        tags = request.risk_tags
        extra: tuple[str, ...] = ()
        if derived:
            if tags and not derived.isdisjoint(tags):
                extra = tuple(sorted(derived.difference(tags)))
            else:
                # The common case: the request carries none of them. Few distinct sets.
                extra = self._sorted_tags.get(derived) or self._sort_tags(derived)
        if self._max_depth is not None and len(request.delegation_path) - 1 > self._max_depth:
            return self._too_deep(len(request.delegation_path) - 1, extra)
        if more or explain:
            ends = more if node is None else (node, *more)
            if explain:
                return self._explained(request, ends, derived, extra)
            return self._best_of(request, ends, derived, extra)

        if node is not None:  # one Packed node (engine.rules): its first holding candidate wins
            mask = node[BASE]
            tagmask = node[TAGMASK]
            if tagmask:
                for tag in tags:
                    bits = tagmask.get(tag)
                    if bits:
                        mask |= bits
                for tag in extra:
                    bits = tagmask.get(tag)
                    if bits:
                        mask |= bits
            if mask:
                plain = node[PLAIN]
                for _rank, group in node[ORDER]:
                    cand = mask & group
                    while cand:
                        low = cand & -cand
                        cond_at = FIRST_RULE + 3 * (low.bit_length() - 1)
                        if low & plain or node[cond_at].holds(request, derived):
                            if not extra:
                                return node[cond_at + DECISION]  # type: ignore[no-any-return]
                            return self._with_extra(node, cond_at, extra)
                        cand ^= low
        if not extra:
            return self._default
        return self._derived_decisions.get((-1, extra)) or self._remember(-1, extra)

    def _walk(
        self, segs: list[str]
    ) -> tuple[Packed | None, tuple[Packed, ...], frozenset[str], Globs]:
        """The walk of an automaton not built out in full: (node, more nodes, derived, globs)."""
        state = self._start
        for i, seg in enumerate(segs):
            nxt = state.trans.get(seg)
            if nxt is None and (seg in state.lits or (nxt := state.other) is None):
                ends, derived, globs = self._auto.finish(state.nodes, segs[i:])
                if len(ends) == 1:
                    return ends[0], (), derived, globs
                return None, ends, derived, globs
            state = nxt
        return state.node, (), state.derived, state.globs

    def _with_extra(self, node: Packed, cond_at: int, extra: tuple[str, ...]) -> Decision:
        """The Decision of the rule whose Condition is node[cond_at], carrying derived tags."""
        if extra == node[DERIVED]:
            return node[cond_at + DERIVED_DECISION]  # type: ignore[no-any-return]
        index = node[RULES][(cond_at - FIRST_RULE) // 3]
        return self._derived_decisions.get((index, extra)) or self._remember(index, extra)

    def _best_of(
        self,
        request: Request,
        ends: tuple[Packed, ...],
        derived: frozenset[str],
        extra: tuple[str, ...],
    ) -> Decision:
        """The winner over several Packed nodes: each node's best candidate, strongest
        first; the best of those wins. Its Decision comes from its node, and rule indexes
        (cold objects at scale) are read only to break a tie between nodes."""
        tags = request.risk_tags
        best_rank = -1
        best = -1  # the winner's rule index, once read
        best_node: Packed = ()
        best_local = 0
        for node in ends:
            mask = node[BASE]
            tagmask = node[TAGMASK]
            if tagmask:
                for tag in tags:
                    mask |= tagmask.get(tag, 0)
                for tag in extra:
                    mask |= tagmask.get(tag, 0)
            if not mask:
                continue
            plain = node[PLAIN]
            for rank, group in node[ORDER]:
                if rank < best_rank:
                    break
                cand = mask & group
                while cand:
                    low = cand & -cand
                    local = low.bit_length() - 1
                    if low & plain or node[FIRST_RULE + 3 * local].holds(request, derived):
                        if rank > best_rank:
                            best_rank, best_node, best_local, best = rank, node, local, -1
                        else:
                            if best < 0:
                                best = best_node[RULES][best_local]
                            index = node[RULES][local]
                            if index < best:
                                best_node, best_local, best = node, local, index
                        break
                    cand ^= low
                else:
                    continue  # no candidate of this rank holds: try the next rank
                break
        if not best_node:
            if not extra:
                return self._default
            return self._derived_decisions.get((-1, extra)) or self._remember(-1, extra)
        cond_at = FIRST_RULE + 3 * best_local
        if not extra:
            return best_node[cond_at + DECISION]  # type: ignore[no-any-return]
        return self._with_extra(best_node, cond_at, extra)

    def _explained(
        self,
        request: Request,
        ends: tuple[Packed, ...],
        derived: frozenset[str],
        extra: tuple[str, ...],
    ) -> Decision:
        """The winner with every matching rule in file order (matched_rule_ids)."""
        tags = request.risk_tags
        matched: list[int] = []
        for node in ends:
            mask = node[BASE]
            tagmask = node[TAGMASK]
            if tagmask:
                for tag in tags:
                    mask |= tagmask.get(tag, 0)
                for tag in extra:
                    mask |= tagmask.get(tag, 0)
            plain = node[PLAIN]
            rules = node[RULES]
            while mask:
                low = mask & -mask
                local = low.bit_length() - 1
                if low & plain or node[FIRST_RULE + 3 * local].holds(request, derived):
                    matched.append(rules[local])
                mask ^= low
        winner = None
        if matched:
            if len(ends) > 1:
                matched = sorted(set(matched))
            if self.combining == DENY_OVERRIDES:
                ranks = self._rank
                top = max(ranks[i] for i in matched)
                winner = next(i for i in matched if ranks[i] == top)
            else:
                winner = matched[0]
        base = self._default if winner is None else self._decisions[winner]
        ids = self._rule_ids
        return self._with(base, tuple(ids[i] for i in matched), extra)

    def _sort_tags(self, tags: frozenset[str]) -> tuple[str, ...]:
        out = tuple(sorted(tags))
        if len(self._sorted_tags) < 4096:
            self._sorted_tags[tags] = out
        return out

    def _with_derived(self, decision: Decision, derived: tuple[str, ...]) -> Decision:
        return self._with(decision, (), derived)

    def _remember(self, index: int, extra: tuple[str, ...]) -> Decision:
        base = self._default if index < 0 else self._decisions[index]
        decision = self._with(base, (), extra)
        if len(self._derived_decisions) < 65536:
            self._derived_decisions[(index, extra)] = decision
        return decision

    def _with(
        self, decision: Decision, matched: tuple[str, ...], derived: tuple[str, ...]
    ) -> Decision:
        return Decision(
            decision=decision.decision,
            rule_id=decision.rule_id,
            reason=decision.reason,
            policy_version=decision.policy_version,
            matched_rule_ids=matched,
            derived_tags=derived,
            approvers=decision.approvers,
            approval_ttl_seconds=decision.approval_ttl_seconds,
        )

    def _too_deep(self, depth: int, derived: tuple[str, ...]) -> Decision:
        return Decision(
            decision=DENY,
            rule_id=MAX_DEPTH_RULE_ID,
            reason=(f"delegation depth {depth} exceeds delegation.max_depth {self._max_depth}"),
            policy_version=self.policy_version,
            derived_tags=derived,
        )

