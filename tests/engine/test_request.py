"""Request validation: each limit of DESIGN section 2, and normalization."""

from __future__ import annotations

from typing import Any

import pytest

from proctor.engine import Request, RequestError


def bad(field: str, fragment: str, **kw: Any) -> None:
    args: dict[str, Any] = {"topic": "job.1.read", "delegation_path": ["a"]}
    args.update(kw)
    with pytest.raises(RequestError) as info:
        Request(**args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert fragment in str(info.value), str(info.value)


def test_normalization() -> None:
    r = Request(
        topic="job.1.read",
        risk_tags=[" PII", "pii", "", "  ", "External"],
        delegation_path=["a", "b"],
        labels={"env": "prod"},
    )
    assert r.risk_tags == ("external", "pii")
    assert r.delegation_path == ("a", "b")
    assert r.labels == {"env": "prod"} and r.tenant == "" and r.run_id == "" and r.request_id == ""
    assert r.acting_agent == "b" and r.depth == 1


def test_labels_are_copied() -> None:
    labels = {"env": "prod"}
    r = Request(topic="a", delegation_path=["x"], labels=labels)
    labels["env"] = "dev"
    assert r.labels == {"env": "prod"}


def test_generators_and_tuples_are_accepted() -> None:
    r = Request(topic="a", delegation_path=(a for a in ["x", "y"]), risk_tags=iter(["T"]))
    assert r.delegation_path == ("x", "y") and r.risk_tags == ("t",)


def test_long_tags_take_the_slow_path_and_still_normalize() -> None:
    tags = ["a" * 60, " " + "B" * 64 + " ", "c" * 40]
    r = Request(topic="a", delegation_path=["x"], risk_tags=tags)
    assert r.risk_tags == ("a" * 60, "b" * 64, "c" * 40)


def test_limits_at_the_edge_are_accepted() -> None:
    Request(
        topic=".".join(["abcdefg"] * 32),
        delegation_path=["a" * 128] * 32,
        risk_tags=[f"{i:064d}" for i in range(64)],
        labels={f"{i:064d}": "v" * 256 for i in range(32)},
        tenant="t" * 128,
        run_id="r" * 128,
        request_id="q" * 128,
    )
    Request(topic="a" * 64, delegation_path=["a"])
    Request(
        topic="a" * 64 + "." + "b" * 64 + "." + "c" * 64 + "." + "d" * 61, delegation_path=["a"]
    )


@pytest.mark.parametrize(
    ("topic", "fragment"),
    [
        ("", "must not be empty"),
        ("a..b", "segment 2 is empty"),
        (".a", "segment 1 is empty"),
        ("a.", "segment 2 is empty"),
        ("a.b c", "segment 2 'b c'"),
        ("job.*.read", "segment 2 '*'"),
        ("a" * 65, "longer than 64"),
        (".".join(["a"] * 33), "at most 32 segments (got 33)"),
        (".".join(["abcdefgh"] * 29), "at most 256 bytes (got 260)"),
        ("café", "[A-Za-z0-9_:-]"),
    ],
)
def test_topic_limits(topic: str, fragment: str) -> None:
    bad("topic", fragment, topic=topic)


def test_topic_must_be_a_string() -> None:
    bad("topic", "must be a string", topic=42)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ([], "at least 1 agent (got 0)"),
        (["a"] * 40, "at most 32 agents (got 40)"),
        (["a", ""], "1..128 characters (got 0)"),
        (["a" * 129], "1..128 characters (got 129)"),
        (["a", 7], "agent ids must be strings"),
        ("agent", "not a single string"),
        (5, "must be a list"),
    ],
)
def test_delegation_path_limits(path: Any, fragment: str) -> None:
    bad("delegation_path", fragment, delegation_path=path)


def test_delegation_path_is_required() -> None:
    with pytest.raises(RequestError) as info:
        Request(topic="a")
    assert info.value.field == "delegation_path"


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ([f"t{i}" for i in range(65)], "at most 64 tags (got 65)"),
        (["x" * 65], "at most 64 characters (got 65)"),
        (["ok", 3], "tags must be strings"),
        ("pii", "not a single string"),
        ([b"pii"], "tags must be strings"),
    ],
)
def test_tag_limits(tags: Any, fragment: str) -> None:
    bad("risk_tags", fragment, risk_tags=tags)


def test_tags_are_trimmed_before_the_length_limit() -> None:
    r = Request(topic="a", delegation_path=["x"], risk_tags=["  " + "y" * 64 + "  "])
    assert r.risk_tags == ("y" * 64,)


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        ({f"k{i}": "v" for i in range(33)}, "at most 32 labels (got 33)"),
        ({"k" * 65: "v"}, "each key at most 64 characters (got 65)"),
        ({"k": "v" * 257}, "each value at most 256 characters (got 257)"),
        ({"k": 1}, "keys and values must be strings"),
        (["k"], "must be a mapping"),
    ],
)
def test_label_limits(labels: Any, fragment: str) -> None:
    bad("labels", fragment, labels=labels)


@pytest.mark.parametrize("field", ["tenant", "run_id", "request_id"])
def test_id_limits(field: str) -> None:
    bad(field, "at most 128 characters (got 129)", **{field: "x" * 129})
    bad(field, "must be a string", **{field: 12})


def test_request_error_is_a_value_error() -> None:
    assert issubclass(RequestError, ValueError)
