"""Local evaluation (`local=True`) in both Python clients, against a live server.

The client watches the server's policy, decides allow and deny in process and ships
every decision to Audit.IngestDecisions; these tests hold its answers to the
server's and its evidence to the server's audit.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from proctor.client import AsyncProctorClient, InvalidRequestError, ProctorClient
from proctor.client.results import BatchItem, DecisionResult
from proctor.server.audit.file_sink import list_segments
from proctor.server.audit.verify import verify_dir
from proctor.v1 import admin_pb2, admin_pb2_grpc
from tests.client.conftest import SEED_POLICY
from tests.support.proctor import ProctorProcess, start_proctor
from tests.support.wait import wait_until

# deny_overrides with derived tags, agent and chain globs, labels, tenants and a depth cap.
RICH = """\
version: v1
policy_version: rich-1
derive_tags:
  - topics: ["job.*.export.*", "job.*.send.*"]
    add: [external]
delegation: {max_depth: 4}
default: {decision: deny, reason: nothing matched}
rules:
  - {id: internal, match: {topics: ["job.*.delegate.internal"]}, decision: allow, reason: ok}
  - id: reads
    match: {topics: ["job.*.read.**"], agents: ["reader-*"]}
    decision: allow
    reason: readers read
  - id: pii
    match: {topics: ["job.*.read.pii"], risk_tags: [pii]}
    decision: require_approval
    reason: pii needs review
  - id: external
    match: {topics: ["job.**"], risk_tags_all: [external]}
    decision: require_approval
    reason: external
  - id: prod-send
    match: {topics: ["job.*.send.*"], labels: {env: [prod]}, tenants: ["acme"]}
    decision: deny
    reason: no sends from acme prod
  - id: research
    match: {topics: ["job.*.publish.*"], chain: ["research-*"]}
    decision: allow
    reason: research publishes
  - id: bulk
    match: {topics: ["job.*.export.bulk", "job.*.download.all"], risk_tags: [bulk-data]}
    decision: deny
    reason: bulk
"""
FIRST_MATCH = RICH.replace("policy_version: rich-1", "policy_version: first-1\n"
                           "combining: first_match").replace("max_depth: 4", "max_depth: 2")

VERBS = ["delegate", "read", "send", "export", "publish", "download"]
OBJECTS = ["internal", "customer-data", "pii", "email", "bulk", "all", "report"]
TAGS = ["pii", "customer-data", "external", "bulk-data", "exfiltration-risk", "PII ", "other"]
AGENTS = ["planner", "reader-1", "research-lead", "etl-7", "mailer"]
FIELDS = ("decision", "rule_id", "reason", "policy_version", "derived_tags", "matched_rule_ids",
          "matched_rule_count")


def corpus(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        labels = {"env": rng.choice(["prod", "dev"])} if rng.random() < 0.5 else None
        out.append({
            "topic": f"job.{rng.randint(1, 9)}.{rng.choice(VERBS)}.{rng.choice(OBJECTS)}",
            "delegation_path": [rng.choice(AGENTS) for _ in range(rng.randint(1, 6))],
            "risk_tags": rng.sample(TAGS, rng.randint(0, 3)),
            "tenant": rng.choice(["acme", "globex", ""]),
            "request_id": f"r{seed}-{i}",
            "labels": labels,
            "explain": rng.random() < 0.2,
        })
    return out


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    wait_until(condition, "the condition", timeout, interval=0.01)


def _local_events(audit: Path) -> list[dict]:
    out = []
    for files in list_segments(audit).values():
        for f in files:
            for line in f.read_bytes().splitlines():
                event = json.loads(line)
                if event.get("kind") == "decision" and event.get("source") == "local":
                    out.append(event)
    return out


def _warm(c: ProctorClient, *pairs: tuple[str, str]) -> None:
    """One call per (tenant, acting agent) goes to the server first, which authorizes the
    caller for them; the client decides theirs locally after that."""
    for tenant, agent in pairs:
        d = c.evaluate("job.0.delegate.internal", delegation_path=[agent], tenant=tenant)
        assert not d.decision_id.startswith("local-") and not d.fail_closed


def _serve(tmp_path: Path, text: str, *args: str) -> ProctorProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    return start_proctor(policy, tmp_path / "server",
                         "--max-pending-approvals-per-tenant", "100000", *args)


@pytest.fixture
def seed_server(tmp_path: Path) -> Iterator[ProctorProcess]:
    s = start_proctor(SEED_POLICY, tmp_path / "server")
    try:
        yield s
    finally:
        s.stop()


@pytest.mark.parametrize("text", [SEED_POLICY.read_text(), RICH, FIRST_MATCH],
                         ids=["seed", "deny_overrides", "first_match"])
def test_local_answers_equal_the_servers_on_a_corpus(tmp_path: Path, text: str) -> None:
    server = _serve(tmp_path, text)
    requests = corpus(2000, seed=len(text))
    try:
        with ProctorClient(server.address, timeout=30) as remote:
            expected: list[BatchItem] = []
            for start in range(0, len(requests), 1000):
                expected += remote.evaluate_batch(requests[start:start + 1000])
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool",
                           timeout=30) as local:
            assert local.wait_for_local_policy(10)
            got = [local.evaluate(**r) for r in requests]
            assert local.local is not None
            decided_here = local.local.local_decisions
    finally:
        assert server.stop() == 0, server.log()
    for request, want, have in zip(requests, expected, got, strict=True):
        assert isinstance(want, DecisionResult)
        assert [getattr(have, f) for f in FIELDS] == [getattr(want, f) for f in FIELDS], request
    remote_only = sum(1 for w in expected if w.ok and w.decision == "require_approval")
    # The first call of each tenant and acting agent is the server's (it authorizes them).
    pairs = {(r["tenant"], r["delegation_path"][-1]) for r in requests}
    assert len(requests) - remote_only - len(pairs) <= decided_here
    assert decided_here <= len(requests) - remote_only
    assert sum(1 for d in got if d.decision_id.startswith("local-")) == decided_here
    assert len(_local_events(tmp_path / "server" / "audit")) == decided_here


def test_local_decisions_reach_the_audit_once_as_local_and_verify(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("acme", "worker"), ("", "etl"))
            ids = [c.evaluate("job.7.delegate.internal", delegation_path=["planner", "worker"],
                              run_id="run-1", tenant="acme", labels={"k": "v"}).decision_id
                   for _ in range(300)]
            deny = c.evaluate("job.7.export.bulk", delegation_path=["etl"],
                              risk_tags=["bulk-data"])
            approval = c.evaluate("job.7.send.email", delegation_path=["m"],
                                  risk_tags=["external"])
        assert approval.decision == "require_approval" and approval.approval_id
        out = subprocess.run(
            [sys.executable, "-m", "proctor.server", "audit", "show", ids[0],
             "--audit-dir", str(tmp_path / "server" / "audit")],
            capture_output=True, text=True, timeout=60)
    finally:
        assert server.stop() == 0, server.log()
    audit = tmp_path / "server" / "audit"
    events = _local_events(audit)
    assert sorted(e["decision_id"] for e in events) == sorted([*ids, deny.decision_id])
    first = next(e for e in events if e["decision_id"] == ids[0])
    assert (first["outcome"], first["rule_id"], first["tenant"], first["run_id"]) == (
        "allow", "allow-internal-delegation", "acme", "run-1")
    assert first["delegation_path"] == ["planner", "worker"] and first["labels"] == {"k": "v"}
    assert verify_dir(audit).ok
    assert out.returncode == 0 and ids[0] in out.stdout, out.stderr
    # The approval was the server's to decide: a server event, not a local one.
    assert approval.approval_id not in {e.get("approval_id") for e in events}


def test_a_reload_reaches_the_watching_client_within_a_second(tmp_path: Path) -> None:
    server = _serve(tmp_path, RICH)
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.wait_for_local_policy(10, "rich-1")
            assert c.evaluate("job.1.delegate.internal", delegation_path=["p"]).allowed
            (tmp_path / "policy.yaml").write_text(
                RICH.replace("rich-1", "rich-2").replace("decision: allow, reason: ok",
                                                         "decision: deny, reason: closed"))
            with grpc.insecure_channel(server.address) as ch:
                admin_pb2_grpc.AdminStub(ch).ReloadPolicy(admin_pb2.ReloadPolicyRequest(),
                                                          timeout=10)
            reloaded = time.monotonic()
            assert c.wait_for_local_policy(1.0, "rich-2"), "the reload took over a second"
            assert time.monotonic() - reloaded < 1.0
            d = c.evaluate("job.1.delegate.internal", delegation_path=["p"])
            assert (d.decision, d.reason, d.policy_version) == ("deny", "closed", "rich-2")
    finally:
        assert server.stop() == 0, server.log()


def test_the_spool_replays_after_the_server_restarts_mid_run(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    ids: list[str] = []
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("", "p"))
            for _ in range(100):
                ids.append(c.evaluate("job.1.delegate.internal", delegation_path=["p"])
                           .decision_id)
            server.stop()
            # Within max_staleness the client keeps deciding; the decisions wait in the spool.
            for _ in range(100):
                d = c.evaluate("job.1.delegate.internal", delegation_path=["p"])
                assert d.decision_id.startswith("local-")
                ids.append(d.decision_id)
            assert c.local is not None and c.local.spool.pending
            server.start()
            for _ in range(100):
                ids.append(c.evaluate("job.1.delegate.internal", delegation_path=["p"])
                           .decision_id)
            _wait(lambda: c.local is not None and not c.local.spool.pending)
    finally:
        assert server.stop() == 0, server.log()
    events = _local_events(tmp_path / "server" / "audit")
    # Once the restarted server answers the watch, the next call of ("", "p") is its again.
    local_ids = [i for i in ids if i.startswith("local-")]
    assert len(local_ids) >= 299
    assert sorted(e["decision_id"] for e in events) == sorted(local_ids)
    assert verify_dir(tmp_path / "server" / "audit").ok


KILLED_CLIENT = """
import sys
from proctor.client import ProctorClient
c = ProctorClient(sys.argv[1], local=True, spool_dir=sys.argv[2])
assert c.wait_for_local_policy(10)
for i in range(int(sys.argv[3])):
    print(c.evaluate("job.1.delegate.internal", delegation_path=["p"]).decision_id, flush=True)
print("done", flush=True)
sys.stdin.read()
"""


def test_a_killed_clients_decisions_are_shipped_by_the_next_client(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    spool = tmp_path / "spool"
    try:
        # Nothing can be shipped while the server is away: the dead client's spool holds it all.
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, server.address, str(spool), "500"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        ids = []
        for line in proc.stdout:
            if line.strip() == "done":
                break
            ids.append(line.strip())
        proc.kill()
        proc.wait(10)
        assert len(ids) == 500
        with ProctorClient(server.address, local=True, spool_dir=spool) as c:
            assert c.wait_for_local_policy(10)
            ids.append(c.evaluate("job.2.delegate.internal", delegation_path=["p"]).decision_id)
            local = c.local
            assert local is not None
            # Acknowledged: the server has stored them (read the audit once it stopped).
            _wait(lambda: not local.shipper.orphans and not local.spool.pending)
    finally:
        assert server.stop() == 0, server.log()
    events = _local_events(tmp_path / "server" / "audit")
    local_ids = [i for i in ids if i.startswith("local-")]
    assert len(local_ids) >= 499  # each client's first call of a tenant and agent is remote
    assert sorted(e["decision_id"] for e in events) == sorted(local_ids)
    assert verify_dir(tmp_path / "server" / "audit").ok
    assert [p for p in (spool).rglob("*") if p.is_file() and p.stat().st_size] == []


def test_a_full_spool_stops_local_decisions_and_fails_closed(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool",
                           max_spool_bytes=20_000, fail_closed=True, timeout=0.5) as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("", "p"))
            server.stop()
            answers = [c.evaluate("job.1.delegate.internal", delegation_path=["p"])
                       for _ in range(400)]
            local = [a for a in answers if a.decision_id.startswith("local-")]
            assert 10 < len(local) < 400
            # Past the bound: the server's to answer, and it is away: fail-closed denies.
            assert all(a.fail_closed and a.decision == "deny" for a in answers[len(local):])
            server.start()
            _wait(lambda: c.local is not None and not c.local.spool.pending)
            assert not c.evaluate("job.1.delegate.internal", delegation_path=["p"]).fail_closed
    finally:
        assert server.stop() == 0, server.log()
    shipped = {e["decision_id"] for e in _local_events(tmp_path / "server" / "audit")}
    assert {a.decision_id for a in local} <= shipped


def test_local_decisions_stop_after_max_staleness(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool",
                           max_staleness=1.5, fail_closed=True, timeout=0.3) as c:
            assert c.wait_for_local_policy(10)
            _warm(c, ("", "p"))
            server.stop()
            stopped = time.monotonic()
            assert not c.evaluate("job.1.delegate.internal", delegation_path=["p"]).fail_closed
            _wait(lambda: c.evaluate("job.1.delegate.internal",
                                     delegation_path=["p"]).fail_closed, timeout=10)
            assert time.monotonic() - stopped >= 1.0
            server.start()
            assert c.wait_for_local_policy(10)
            _wait(lambda: not c.evaluate("job.1.delegate.internal",
                                         delegation_path=["p"]).fail_closed, timeout=10)
    finally:
        server.stop()


def test_with_local_evaluation_off_the_client_decides_remotely(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text(), "--local-evaluation", "off")
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool") as c:
            assert c.local is not None
            _wait(lambda: c.local is not None and bool(c.local.refused))
            assert "FAILED_PRECONDITION" in c.local.refused
            d = c.evaluate("job.1.delegate.internal", delegation_path=["p"])
            assert d.allowed and not d.decision_id.startswith("local-")
    finally:
        assert server.stop() == 0, server.log()
    assert _local_events(tmp_path / "server" / "audit") == []


def test_invalid_requests_raise_like_the_server(seed_server: ProctorProcess,
                                                tmp_path: Path) -> None:
    with ProctorClient(seed_server.address, local=True, spool_dir=tmp_path / "spool",
                       fail_closed=True) as c:
        assert c.wait_for_local_policy(10)
        with pytest.raises(InvalidRequestError, match="delegation_path"):
            c.evaluate("job.1.delegate.internal")
        with pytest.raises(InvalidRequestError, match="topic"):
            c.evaluate("job..x", delegation_path=["p"])


def test_the_async_client_decides_locally_and_ships(tmp_path: Path) -> None:
    server = _serve(tmp_path, SEED_POLICY.read_text())

    async def main() -> list[str]:
        async with AsyncProctorClient(server.address, local=True,
                                      spool_dir=tmp_path / "spool") as c:
            assert await c.wait_for_local_policy(10)
            first = await c.evaluate("job.3.delegate.internal", delegation_path=["p", "a"])
            assert not first.decision_id.startswith("local-")  # the server's, authorizing "a"
            answers = await asyncio.gather(*(
                c.evaluate("job.3.delegate.internal", delegation_path=["p", "a"])
                for i in range(200)))
            review = await c.evaluate("job.3.read.pii", delegation_path=["p"],
                                      risk_tags=["pii"])
            assert review.decision == "require_approval" and review.approval_id
            return [a.decision_id for a in answers]

    try:
        ids = asyncio.run(main())
    finally:
        assert server.stop() == 0, server.log()
    assert all(i.startswith("local-") for i in ids)
    events = _local_events(tmp_path / "server" / "audit")
    assert sorted(e["decision_id"] for e in events) == sorted(ids)



PRINCIPALS = """
principals:
  - id: planner-bot
    roles: [agent]
    tenants: [acme]
    agents: ["planner", "research-*"]
    tokens: ["{token}"]
"""


def test_a_tenant_or_agent_the_caller_may_not_act_as_is_never_decided_locally(
    tmp_path: Path,
) -> None:
    from proctor.client import ProctorError
    from proctor.server.auth.tokens import hash_token

    principals = tmp_path / "principals.yaml"
    principals.write_text(PRINCIPALS.format(token=hash_token("tok-agent")))
    server = _serve(tmp_path, SEED_POLICY.read_text(), "--principals", str(principals))
    try:
        with ProctorClient(server.address, local=True, spool_dir=tmp_path / "spool",
                           metadata=[("authorization", "Bearer tok-agent")]) as c:
            assert c.wait_for_local_policy(10)
            own = [c.evaluate("job.1.delegate.internal", delegation_path=["root", "planner"],
                              tenant="acme") for _ in range(20)]
            assert all(d.allowed for d in own)
            assert sum(d.decision_id.startswith("local-") for d in own) == 19
            for tenant, path in (("globex", ["planner"]), ("acme", ["planner", "intruder"])):
                for _ in range(3):
                    with pytest.raises(ProctorError) as e:
                        c.evaluate("job.1.delegate.internal", delegation_path=path,
                                   tenant=tenant)
                    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
            local = c.local
            assert local is not None
            _wait(lambda: not local.spool.pending)
    finally:
        assert server.stop() == 0, server.log()
    events = _local_events(tmp_path / "server" / "audit")
    assert len(events) == 19 and {e["tenant"] for e in events} == {"acme"}
    assert verify_dir(tmp_path / "server" / "audit").ok
