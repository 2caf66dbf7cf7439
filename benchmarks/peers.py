"""Proctor's engine beside OPA (Rego), Cedar and Casbin: same policy, same requests.

Install the peers (never runtime or dev dependencies of Proctor):

    pip install -r benchmarks/requirements-peers.txt
    pip install --no-deps --ignore-requires-python opa-golib-python-bindings==0.4.4

(opa-golib-python-bindings declares Python >= 3.14 but works on 3.11.)

    python benchmarks/peers.py [--requests 2000] [--sample 40] [--rules 10000]
                               [--out PATH]

Two policies: the seed policy (examples/safety.yaml) and a generated one of
--rules rules. Both use what all four engines can express exactly: topic
patterns whose segments are literals or `*` (one segment), and any-of risk
tags; deny_overrides combining (deny > require_approval > allow, ties to the
earliest rule) and the default `deny`. Each engine gets its own native policy:

- Proctor: the YAML, through engine.compile_policy (decision cache off); the
  timed call includes building the engine.Request (validation, tag
  normalization), as a caller pays it.
- OPA: one Rego module over the rules as data; `glob.match(pattern, ["."],
  topic)` (where `*` stays inside a segment); the combining is written in Rego,
  which returns the deciding rule.
- Cedar: one `permit` per rule; `like` lets `*` cross dots, so every pattern
  also pins the segment count (`context.nseg == N`): with exactly N-1 dots in
  the topic and N-1 literal dots in the pattern, no `*` can swallow a dot.
  Cedar answers allow/deny only; its diagnostics name every satisfied policy,
  and the combining is done on that set in Python (a few set operations).
- Casbin: one policy line per (rule, pattern), ordered by decision strength
  then file order, matched by regexMatch (keyMatch cannot express a
  one-segment wildcard); effect some(where allow) stops at the first match,
  which enforce_ex names: that line's rule is the deciding rule.

Every engine must give the same decision and rule id as Proctor for every
request it is asked (mismatches are counted and shown). At 10,000 rules OPA,
Cedar and Casbin take tens of milliseconds per decision, so they are timed on
a --sample of the requests; Proctor on all of them. Each decision is timed
alone (perf_counter_ns). The machine is shared and noisy: compare orders of
magnitude, not percents. A peer that is not installed is skipped and the
table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proctor.bench.results import git_commit, save_result  # noqa: E402
from proctor.engine import Request, compile_policy  # noqa: E402

SEED = ROOT / "examples" / "safety.yaml"
STRENGTH = {"deny": 3, "require_approval": 2, "allow": 1}
INSTALL = ("pip install -r benchmarks/requirements-peers.txt && pip install --no-deps "
           "--ignore-requires-python opa-golib-python-bindings==0.4.4")

# -- the policies -------------------------------------------------------------------------------

VERBS = ("read", "write", "export", "send", "publish", "delete", "download", "query", "update")
OBJECTS = ("pii", "customer-data", "email", "bulk", "all", "report", "ledger", "model", "logs")
TAGS = ("pii", "external", "bulk-data", "exfiltration-risk", "customer-data", "finance",
        "prod", "secrets", "low-risk", "gdpr")


def generated_policy(n: int, seed: int = 3) -> str:
    """n rules over topic patterns of literals and `*`, with any-of tags, for all four engines."""
    rng = random.Random(seed)
    lines = ["version: v1", "rules:"]
    for i in range(n):
        pats = []
        for _ in range(rng.choice((1, 1, 2))):
            segs = [f"svc{rng.randrange(max(1, n // 20))}", "*", rng.choice(VERBS),
                    rng.choice(OBJECTS + ("*",))]
            if rng.random() < 0.3:
                segs.append(rng.choice(("v1", "v2", "*")))
            pats.append(".".join(segs))
        tags = rng.sample(TAGS, rng.choice((0, 1, 1, 2)))
        decision = rng.choice(("allow", "allow", "require_approval", "deny"))
        lines.append(f"  - id: r{i}")
        lines.append(f"    match: {{topics: {json.dumps(pats)}, risk_tags: {json.dumps(tags)}}}")
        lines.append(f"    decision: {decision}")
        lines.append(f'    reason: "generated rule {i}"')
    return "\n".join(lines) + "\n"


def requests_for(policy: Any, count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Topics and tags aimed at the rules (concrete values for `*`), and some at nothing."""
    rng = random.Random(seed)
    rules = list(policy.rules)
    out = []
    for i in range(count):
        if rng.random() < 0.85:
            rule = rules[rng.randrange(len(rules))]
            pat = rng.choice(rule.match.topics)
            topic = ".".join(rng.choice(("42", "7", "a1", "x")) if s == "*" else s
                             for s in pat.split("."))
            tags = set()
            if rule.match.risk_tags and rng.random() < 0.8:
                tags.add(rng.choice(rule.match.risk_tags))
            if rng.random() < 0.3:
                tags.add(rng.choice(TAGS))
        else:
            topic = f"job.{i}.noop.thing"
            tags = {rng.choice(TAGS)} if rng.random() < 0.5 else set()
        out.append({"topic": topic, "risk_tags": sorted(tags),
                    "delegation_path": ["orchestrator", f"agent-{i % 7}"]})
    return out


def norm_tags(tags: list[str]) -> list[str]:
    return sorted({t.strip().lower() for t in tags if t.strip()})


def rule_table(policy: Any) -> list[dict[str, Any]]:
    """The rules as plain data, refusing what the peers cannot all express exactly."""
    if policy.combining != "deny_overrides":
        raise SystemExit("peers.py compares deny_overrides policies only")
    rows = []
    for i, r in enumerate(policy.rules):
        m = r.match
        if m.has_conditions_beyond_topic_and_tags:
            raise SystemExit(f"rule {r.id}: only topics and risk_tags are compared")
        if any("**" in p.split(".") for p in m.topics):
            raise SystemExit(f"rule {r.id}: `**` is not compared (Cedar cannot pin it)")
        rows.append({"idx": i, "id": r.id, "decision": r.decision, "topics": list(m.topics),
                     "tags": [t.lower() for t in m.risk_tags]})
    return rows


def combine(rows: list[dict[str, Any]], matched: set[int]) -> tuple[str, str]:
    """deny_overrides over a set of matched rule indices; the default is deny."""
    if not matched:
        return "deny", "default"
    best = max(STRENGTH[rows[i]["decision"]] for i in matched)
    win = min(i for i in matched if STRENGTH[rows[i]["decision"]] == best)
    return rows[win]["decision"], rows[win]["id"]


# -- the engines: each returns (name, version, decide(request) -> (decision, rule_id)) ----------


def proctor_engine(text: str) -> Callable[[dict[str, Any]], tuple[str, str]]:
    policy = compile_policy(text)

    def decide(req: dict[str, Any]) -> tuple[str, str]:
        d = policy.evaluate(Request(topic=req["topic"], risk_tags=req["risk_tags"],
                                    delegation_path=req["delegation_path"]))
        return d.decision, d.rule_id

    return decide


REGO = """\
package proctor

import rego.v1

strength := {"deny": 3, "require_approval": 2, "allow": 1}

matched contains r.idx if {
	some r in data.rules
	topic_ok(r)
	tags_ok(r)
}

topic_ok(r) if {
	some p in r.topics
	glob.match(p, ["."], input.topic)
}

tags_ok(r) if count(r.tags) == 0

tags_ok(r) if {
	some t in r.tags
	t in input.tags
}

best := max({strength[data.rules[i].decision] | some i in matched})

winner := min({i | some i in matched; strength[data.rules[i].decision] == best})

default result := {"decision": "deny", "rule_id": "default"}

result := {"decision": data.rules[winner].decision, "rule_id": data.rules[winner].id} if {
	count(matched) > 0
}
"""


def opa_engine(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[str, str]]:
    from opa_bindings import OpaEngine

    eng = OpaEngine()
    eng.add_policy("proctor.rego", REGO)
    eng.add_data({"rules": rows})

    def decide(req: dict[str, Any]) -> tuple[str, str]:
        out = eng.eval_document("proctor.result",
                                {"topic": req["topic"], "tags": norm_tags(req["risk_tags"])})
        return out["decision"], out["rule_id"]

    return decide


def cedar_policies(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        topic = " || ".join(
            f'(context.topic like "{p}" && context.nseg == {len(p.split("."))})'
            for p in r["topics"]
        )
        cond = f"({topic})"
        if r["tags"]:
            cond += " && context.tags.containsAny([" + ", ".join(
                json.dumps(t) for t in r["tags"]) + "])"
        out.append(f'@id("{r["id"]}")\npermit(principal, action, resource) when {{ {cond} }};')
    return "\n".join(out) + "\n"


def cedar_engine(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[str, str]]:
    import cedarpy

    policies = cedarpy.PolicySet.from_str(cedar_policies(rows))
    entities = cedarpy.Entities.from_json_str("[]")
    # the id Cedar reports for the k-th policy: its @id annotation or "policyK"
    by_id: dict[str, int] = {}
    for r in rows:
        by_id[r["id"]] = r["idx"]
        by_id[f"policy{r['idx']}"] = r["idx"]

    def decide(req: dict[str, Any]) -> tuple[str, str]:
        res = cedarpy.is_authorized({
            "principal": 'Agent::"a"', "action": 'Action::"evaluate"',
            "resource": 'Topic::"t"',
            "context": {"topic": req["topic"], "nseg": req["topic"].count(".") + 1,
                        "tags": norm_tags(req["risk_tags"])},
        }, policies, entities)
        matched = {by_id[p] for p in res.diagnostics.reasons}
        return combine(rows, matched)

    return decide


CASBIN_MODEL = """\
[request_definition]
r = topic, tags

[policy_definition]
p = topic, tags, rule, decision

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = regexMatch(r.topic, p.topic) && regexMatch(r.tags, p.tags)
"""


def casbin_lines(rows: list[dict[str, Any]]) -> list[list[str]]:
    ordered = sorted(rows, key=lambda r: (-STRENGTH[r["decision"]], r["idx"]))
    lines = []
    for r in ordered:
        tags = ("^.*,(" + "|".join(re.escape(t) for t in r["tags"]) + "),") if r["tags"] else ".*"
        for p in r["topics"]:
            rx = "^" + r"\.".join("[^.]+" if s == "*" else re.escape(s)
                                  for s in p.split(".")) + "$"
            lines.append([rx, tags, r["id"], r["decision"]])
    return lines


def casbin_engine(rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], tuple[str, str]]:
    import casbin

    model = casbin.Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model)
    enforcer.add_policies(casbin_lines(rows))

    def decide(req: dict[str, Any]) -> tuple[str, str]:
        tags = "," + ",".join(norm_tags(req["risk_tags"])) + ","
        ok, explain = enforcer.enforce_ex(req["topic"], tags)
        if not ok or not explain:
            return "deny", "default"
        return explain[3], explain[2]

    return decide


PEERS: dict[str, tuple[str, Callable[..., Any]]] = {
    "opa": ("opa-golib-python-bindings", opa_engine),
    "cedar": ("cedarpy", cedar_engine),
    "casbin": ("casbin", casbin_engine),
}


def version_of(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


# -- measuring --------------------------------------------------------------------------------


def measure(decide: Callable[[dict[str, Any]], tuple[str, str]], reqs: list[dict[str, Any]],
            expected: list[tuple[str, str]]) -> dict[str, Any]:
    t0 = time.perf_counter()
    decide(reqs[0])  # some engines compile lazily, on the first query
    first_ms = round((time.perf_counter() - t0) * 1000, 2)
    for req in reqs[1: min(20, len(reqs))]:
        decide(req)  # warm caches and lazy setup
    times: list[float] = []
    mismatches = []
    for req, want in zip(reqs, expected, strict=False):
        t0 = time.perf_counter_ns()
        got = decide(req)
        times.append((time.perf_counter_ns() - t0) / 1000)
        if got != want:
            mismatches.append({"request": req, "expected": want, "got": list(got)})
    times.sort()
    return {
        "first_decision_ms": first_ms,
        "decisions": len(times),
        "p50_us": round(times[len(times) // 2], 1),
        "p99_us": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
        "mean_us": round(statistics.fmean(times), 1),
        "mismatches": len(mismatches),
        "mismatch_examples": mismatches[:3],
    }


def run_case(name: str, text: str, n_requests: int, sample: int,
             only: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    policy = compile_policy(text)
    rows = rule_table(policy)
    reqs = requests_for(policy, n_requests)
    proctor = proctor_engine(text)
    compile_s = time.perf_counter() - t0
    expected = [proctor(r) for r in reqs]
    out: dict[str, Any] = {
        "policy": name, "rules": len(rows), "requests": len(reqs),
        "decision_mix": {d: sum(1 for e in expected if e[0] == d) for d in STRENGTH},
        "engines": {"proctor": {"version": "this tree", "setup_s": round(compile_s, 3),
                                **measure(proctor, reqs, expected)}},
    }
    peer_reqs = reqs[:sample] if len(rows) > 1000 else reqs[: max(sample, min(len(reqs), 500))]
    for peer, (dist, build) in PEERS.items():
        if only and peer not in only:
            continue
        ver = version_of(dist)
        if not ver:
            out["engines"][peer] = {"skipped": f"{dist} is not installed ({INSTALL})"}
            print(f"  {peer}: skipped, {dist} not installed", file=sys.stderr)
            continue
        try:
            t0 = time.perf_counter()
            decide = build(rows)
            setup = time.perf_counter() - t0
            print(f"  {peer}: set up in {setup:.2f} s, deciding {len(peer_reqs)} requests",
                  file=sys.stderr)
            out["engines"][peer] = {"version": ver, "setup_s": round(setup, 3),
                                    **measure(decide, peer_reqs, expected)}
        except Exception as e:  # noqa: BLE001 (a peer that breaks is reported, not fatal)
            out["engines"][peer] = {"skipped": f"{type(e).__name__}: {e}"[:300]}
            print(f"  {peer}: failed: {e}", file=sys.stderr)
    return out


def table(cases: list[dict[str, Any]]) -> str:
    lines = [f"{'policy':<22}{'engine':<9}{'version':<10}{'decisions':>10}{'p50 us':>11}"
             f"{'p99 us':>11}{'vs proctor':>11}{'setup s':>9}{'1st ms':>9}{'agree':>8}"]
    for case in cases:
        base = case["engines"]["proctor"]["p50_us"]
        label = f"{case['policy']} ({case['rules']:,})"
        for name, e in case["engines"].items():
            if "skipped" in e:
                lines.append(f"{label:<22}{name:<9}skipped: {e['skipped'][:60]}")
                continue
            agree = "yes" if e["mismatches"] == 0 else f"{e['mismatches']} off"
            lines.append(
                f"{label:<22}{name:<9}{e['version'][:9]:<10}{e['decisions']:>10,}"
                f"{e['p50_us']:>11,.1f}{e['p99_us']:>11,.1f}{e['p50_us'] / base:>10,.0f}x"
                f"{e['setup_s']:>9.2f}{e['first_decision_ms']:>9,.1f}{agree:>8}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per policy")
    ap.add_argument("--sample", type=int, default=40,
                    help="requests the peers decide on the large policy")
    ap.add_argument("--rules", type=int, default=10_000, help="size of the generated policy")
    ap.add_argument("--only", default="", help="comma-separated peers (opa,cedar,casbin)")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    only = [p for p in args.only.split(",") if p]
    cases = []
    for name, text in (("seed", SEED.read_text()),
                       ("generated", generated_policy(args.rules))):
        print(f"{name} policy:", file=sys.stderr)
        cases.append(run_case(name, text, args.requests, args.sample, only))
    print(table(cases))
    doc = {
        "benchmark": "peers",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "commit": git_commit(),
        "note": "shared, noisy 2-core machine; each decision timed alone; peers on a sample "
                "of the requests at the large policy",
        "settings": vars(args),
        "cases": cases,
    }
    print(f"wrote {save_result(doc, args.out, 'peers')}")
    bad = any(e.get("mismatches") for c in cases for e in c["engines"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
