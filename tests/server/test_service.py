"""Decisions, Admin, health, reflection and metrics of a real server, through the Python client."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from proctor.client import (
    EvaluationRequest,
    InvalidRequestError,
    ItemError,
    ProctorClient,
    ProctorError,
)
from proctor.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    approvals_pb2,
    approvals_pb2_grpc,
    decisions_pb2,
    decisions_pb2_grpc,
)
from tests.support.proctor import ProctorProcess
from tests.support.ulid import timestamp_ms

AGENTS = ["orchestrator", "research-agent", "etl-7"]


# -- the seed scenario (DESIGN section 10) ------------------------------------------


def test_internal_delegation_is_allowed(client: ProctorClient) -> None:
    d = client.evaluate("job.42.delegate.internal", delegation_path=AGENTS)
    assert (d.decision, d.rule_id) == ("allow", "allow-internal-delegation")
    assert d.reason == "Internal agent delegation is safe"
    assert d.approval_id == ""


@pytest.mark.parametrize(
    ("topic", "tags", "rule"),
    [
        ("job.42.read.pii", ["pii"], "approve-data-access"),
        ("job.42.read.customer-data", ["Customer-Data "], "approve-data-access"),
        ("job.42.send.email", ["external"], "approve-external-action"),
        ("job.42.publish.blog", ["external"], "approve-external-action"),
    ],
)
def test_sensitive_actions_require_approval(
    client: ProctorClient, topic: str, tags: list[str], rule: str
) -> None:
    d = client.evaluate(topic, delegation_path=AGENTS, risk_tags=tags)
    assert (d.decision, d.rule_id) == ("require_approval", rule)
    # Each creates an approval to wait on (the workflow is tested in tests/approvals).
    assert d.approval_id.startswith("apv_")


def test_bulk_export_is_denied_whatever_else_matches(client: ProctorClient) -> None:
    d = client.evaluate(
        "job.42.export.bulk", delegation_path=AGENTS, risk_tags=["external", "bulk-data"],
        explain=True,
    )
    assert (d.decision, d.rule_id) == ("deny", "deny-bulk-export")
    assert d.reason == "Bulk data export blocked regardless of delegation path"
    assert d.matched_rule_ids == ("approve-external-action", "deny-bulk-export")


def test_no_matching_rule_is_the_default_deny(client: ProctorClient) -> None:
    d = client.evaluate("job.42.read.weather", delegation_path=["a"])
    assert (d.decision, d.rule_id) == ("deny", "default")
    assert d.policy_version


def test_decision_ids_are_unique_sortable_ulids(client: ProctorClient) -> None:
    ids = [
        client.evaluate("job.1.delegate.internal", delegation_path=["a"]).decision_id
        for _ in range(50)
    ]
    assert len(set(ids)) == 50
    assert all(len(i) == 26 for i in ids)
    assert ids == sorted(ids)
    assert timestamp_ms(ids[-1]) >= timestamp_ms(ids[0])


def test_admin_names_the_worker_and_a_lone_worker_skips_it_on_evaluate(
    seed_server: ProctorProcess,
) -> None:
    with grpc.insecure_channel(seed_server.address) as ch:
        _, call = admin_pb2_grpc.AdminStub(ch).GetPolicy.with_call(
            admin_pb2.GetPolicyRequest(), timeout=5
        )
        assert ("proctor-worker", str(seed_server.pid)) in [
            (m.key, m.value) for m in call.trailing_metadata()
        ]
        stub = decisions_pb2_grpc.DecisionsStub(ch)
        req = EvaluationRequest("job.1.delegate.internal", delegation_path=["a"]).to_proto()
        _, call = stub.Evaluate.with_call(req, timeout=5)
        assert "proctor-worker" not in [m.key for m in call.trailing_metadata()]


# -- batches -------------------------------------------------------------------------


def test_batch_answers_in_order_with_errors_in_their_slots(client: ProctorClient) -> None:
    items = [
        EvaluationRequest("job.1.delegate.internal", delegation_path=["a"]),
        {"topic": "job.1.export.bulk", "delegation_path": ["a"], "risk_tags": ["bulk-data"]},
        EvaluationRequest("", delegation_path=["a"]),
        EvaluationRequest("job.1.read.pii", delegation_path=["a"], risk_tags=["pii"]),
        EvaluationRequest("job.1.delegate.internal", delegation_path=[]),
    ]
    results = client.evaluate_batch(items)
    assert len(results) == 5
    assert [getattr(r, "rule_id", None) for r in results] == [
        "allow-internal-delegation", "deny-bulk-export", None, "approve-data-access", None,
    ]
    for bad, field in ((results[2], "topic"), (results[4], "delegation_path")):
        assert isinstance(bad, ItemError)
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert field in bad.message
    ids = [r.decision_id for r in results if r.ok]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_batch_of_1000_is_decided(client: ProctorClient) -> None:
    items = [
        EvaluationRequest(f"job.{i}.delegate.internal", delegation_path=["a"], run_id=str(i))
        for i in range(1000)
    ]
    results = client.evaluate_batch(items)
    assert len(results) == 1000
    assert all(r.ok and r.decision == "allow" for r in results)


def test_batch_of_1001_is_refused_whole(client: ProctorClient) -> None:
    items = [EvaluationRequest("job.1.delegate.internal", delegation_path=["a"])] * 1001
    with pytest.raises(InvalidRequestError) as e:
        client.evaluate_batch(items)
    assert "requests" in e.value.details and "1000" in e.value.details


def test_empty_batch_is_empty(client: ProctorClient) -> None:
    assert client.evaluate_batch([]) == []


# -- bad input: INVALID_ARGUMENT naming the field -------------------------------------


BAD_INPUTS = {
    "empty topic": ({"topic": ""}, "topic"),
    "topic too long": ({"topic": ".".join(["abcdefgh"] * 30)}, "topic"),
    "bad topic segment": ({"topic": "job.4$2.export"}, "topic"),
    "empty topic segment": ({"topic": "job..export"}, "topic"),
    "no delegation path": ({"delegation_path": []}, "delegation_path"),
    "delegation path too deep": ({"delegation_path": [f"a{i}" for i in range(33)]},
                                 "delegation_path"),
    "too many tags": ({"risk_tags": [f"t{i}" for i in range(65)]}, "risk_tags"),
    "tag too long": ({"risk_tags": ["x" * 65]}, "risk_tags"),
    "too many labels": ({"labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
    "label value too long": ({"labels": {"env": "v" * 257}}, "labels"),
    "label key too long": ({"labels": {"k" * 65: "v"}}, "labels"),
    "tenant too long": ({"tenant": "t" * 129}, "tenant"),
    "run_id too long": ({"run_id": "r" * 129}, "run_id"),
    "request_id too long": ({"request_id": "r" * 129}, "request_id"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_invalid_argument_naming_the_field(client: ProctorClient, case: str) -> None:
    change, field = BAD_INPUTS[case]
    fields = {"topic": "job.1.delegate.internal", "delegation_path": ["a"], **change}
    with pytest.raises(InvalidRequestError) as e:
        client.evaluate(fields.pop("topic"), **fields)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in e.value.details, e.value.details


@pytest.mark.parametrize("case", ["approval_id", "non-ascii tenant", "invalid utf-8"])
def test_awkward_values_are_judged(client: ProctorClient,
                                                     seed_server: ProctorProcess,
                                                     case: str) -> None:
    # Values past a limit, non-ASCII text and invalid UTF-8, over gRPC.
    fields = {"topic": "job.1.delegate.internal", "delegation_path": ["a"]}
    if case == "approval_id":
        with pytest.raises(InvalidRequestError) as e:
            client.evaluate(**fields, approval_id="a" * 129)
        assert "approval_id" in e.value.details
    elif case == "non-ascii tenant":
        d = client.evaluate(**fields, tenant="é" * 128, risk_tags=[" PII "])
        assert (d.decision, d.rule_id) == ("allow", "allow-internal-delegation")
    else:
        raw = decisions_pb2.EvaluateRequest(**fields, tenant="ab").SerializeToString()
        raw = raw.replace(b"ab", b"a\xff")
        with grpc.insecure_channel(seed_server.address) as ch, pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/proctor.v1.Decisions/Evaluate")(raw, timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not an EvaluateRequest" in (e.value.details() or "")


def test_bytes_that_are_not_a_request_are_invalid_argument(seed_server: ProctorProcess) -> None:
    with grpc.insecure_channel(seed_server.address) as ch:
        call = ch.unary_unary("/proctor.v1.Decisions/Evaluate")
        for raw in (b"\xff\xff\xff", b"\x2a\x10short"):
            with pytest.raises(grpc.RpcError) as e:
                call(raw, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raw
            assert (e.value.details() or "").startswith("request: not an EvaluateRequest")
        # The server is still fine.
        good = decisions_pb2.EvaluateRequest(topic="job.1.delegate.internal",
                                             delegation_path=["a"])
        reply = decisions_pb2.EvaluateResponse.FromString(call(good.SerializeToString(),
                                                               timeout=5))
        assert reply.rule_id == "allow-internal-delegation"


def test_bad_input_is_never_failed_closed(seed_server: ProctorProcess) -> None:
    with ProctorClient(seed_server.address, fail_closed=True) as c, pytest.raises(
        InvalidRequestError
    ):
        c.evaluate("", delegation_path=["a"])


def test_message_over_1_mib_is_refused_by_the_server(seed_server: ProctorProcess) -> None:
    item = EvaluationRequest(
        "job.1.delegate.internal", delegation_path=["a" * 100] * 32
    ).to_proto()
    batch = decisions_pb2.EvaluateBatchRequest(requests=[item] * 400)
    assert batch.ByteSize() > 1 << 20
    # A channel that sends more than 1 MiB, so the server's own limit is what refuses it.
    opts = [("grpc.max_send_message_length", 8 << 20)]
    with (
        grpc.insecure_channel(seed_server.address, options=opts) as ch,
        pytest.raises(grpc.RpcError) as e,
    ):
        decisions_pb2_grpc.DecisionsStub(ch).EvaluateBatch(batch, timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_client_refuses_to_send_over_1_mib(client: ProctorClient) -> None:
    item = EvaluationRequest("job.1.delegate.internal", delegation_path=["a" * 100] * 32)
    with pytest.raises(ProctorError) as e:
        client.evaluate_batch([item] * 400)
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- admin, unimplemented services ----------------------------------------------------


def test_get_policy_describes_the_serving_policy(seed_server: ProctorProcess) -> None:
    with grpc.insecure_channel(seed_server.address) as ch:
        p = admin_pb2_grpc.AdminStub(ch).GetPolicy(admin_pb2.GetPolicyRequest(), timeout=5)
    assert p.rule_count == 4
    assert p.combining == "deny_overrides"
    assert p.source.endswith("safety.yaml")
    assert p.last_reload_error == ""
    assert "deny-bulk-export" in p.text
    assert len(p.policy_version) == 12
    assert p.loaded_at.seconds > 0


def test_approvals_service_answers(seed_server: ProctorProcess) -> None:
    with grpc.insecure_channel(seed_server.address) as ch:
        stub = approvals_pb2_grpc.ApprovalsStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.GetApproval(approvals_pb2.GetApprovalRequest(approval_id="apv_x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# -- health, reflection, metrics ------------------------------------------------------


@pytest.mark.parametrize(
    "service", ["", "proctor.v1.Decisions", "proctor.v1.Budgets", "proctor.v1.Approvals"]
)
def test_health_is_serving(seed_server: ProctorProcess, service: str) -> None:
    assert seed_server.health(service) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_every_service(seed_server: ProctorProcess) -> None:
    with grpc.insecure_channel(seed_server.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        method = db.FindFileContainingSymbol("proctor.v1.Decisions")
    assert {
        "proctor.v1.Decisions", "proctor.v1.Admin", "proctor.v1.Budgets",
        "proctor.v1.Approvals", "proctor.v1.Audit", "grpc.health.v1.Health",
    } <= services
    assert method.name == "proctor/v1/decisions.proto"


def test_reflection_v1_answers_too(seed_server: ProctorProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(seed_server.address) as ch:
        call = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                            timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert "proctor.v1.Decisions" in names


def test_metrics_count_decisions_by_outcome_and_rule(
    seed_server: ProctorProcess, client: ProctorClient
) -> None:
    client.evaluate("job.9.export.bulk", delegation_path=["a"], risk_tags=["bulk-data"])
    with urllib.request.urlopen(seed_server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    assert 'proctor_decisions_total{outcome="deny",rule_id="deny-bulk-export"}' in text
    assert "proctor_evaluate_latency_seconds_bucket" in text
    assert "proctor_batch_size_bucket" in text
    assert 'proctor_invalid_requests_total{field="topic",method="Evaluate"}' in text
