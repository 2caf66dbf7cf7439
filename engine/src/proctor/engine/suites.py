"""Policy test suites (``*.tests.yaml``): requests with their expected answers.

    tests:
      - name: internal delegation is allowed        # optional, shown on failure
        request:                                    # the fields of EvaluateRequest
          topic: job.42.delegate.internal
          delegation_path: [planner, worker]
          risk_tags: []                             # optional, as are tenant, run_id,
          labels: {env: prod}                       # request_id and labels
        expect:
          decision: allow                           # required
          rule_id: allow-internal-delegation        # optional, as are the rest
          reason: "..."
          matched_rule_ids: [allow-internal-delegation]   # turns explain on
          derived_tags: []

A top-level list of cases (without ``tests:``) is accepted too. A malformed
suite raises SuiteError naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proctor.engine.errors import RequestError
from proctor.engine.evaluate import CompiledPolicy
from proctor.engine.model import DECISIONS
from proctor.engine.request import Request
from proctor.engine.yamlread import MAP, SCALAR, SEQ, YamlError, YNode, read_yaml

CASE_KEYS = ("name", "request", "expect")
REQUEST_KEYS = ("topic", "delegation_path", "risk_tags", "tenant", "run_id", "request_id", "labels")
EXPECT_KEYS = ("decision", "rule_id", "reason", "matched_rule_ids", "derived_tags")


class SuiteError(Exception):
    def __init__(self, file: str, line: int | None, message: str) -> None:
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    line: int
    request: Request
    expect: dict[str, Any]


@dataclass(slots=True)
class Failure:
    case: Case
    mismatches: list[tuple[str, Any, Any]] = field(default_factory=list)  # field, expected, got

    def render(self, file: str) -> str:
        lines = [f"{file}:{self.case.line}: FAIL {self.case.name}"]
        for name, expected, got in self.mismatches:
            lines.append(f"    {name}: expected {_show(expected)}, got {_show(got)}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) and value == "" else str(value)


def _plain(node: YNode) -> Any:
    if node.kind == SCALAR:
        return node.value
    if node.kind == SEQ:
        return [_plain(n) for n in node.value]
    return {_plain(k): _plain(v) for k, v in node.value}


def load_suite(text: str, file: str) -> list[Case]:
    """Parse a suite; raise SuiteError on any mistake."""
    try:
        root = read_yaml(text)
    except YamlError as exc:
        raise SuiteError(file, exc.line, exc.message) from None
    if root is None:
        raise SuiteError(file, None, "the suite is empty")
    items = root
    if root.kind == MAP:
        keys = {k.value: v for k, v in root.value}
        unknown = [k for k in keys if k != "tests"]
        if unknown or "tests" not in keys:
            raise SuiteError(file, root.line, "expected a mapping with one key, 'tests'")
        items = keys["tests"]
    if items.kind != SEQ:
        raise SuiteError(file, items.line, "'tests' must be a list of cases")
    return [_case(node, file, i) for i, node in enumerate(items.value, 1)]


def _mapping(node: YNode, file: str, what: str, allowed: tuple[str, ...]) -> dict[str, YNode]:
    if node.kind != MAP:
        raise SuiteError(file, node.line, f"{what} must be a mapping")
    out: dict[str, YNode] = {}
    for k, v in node.value:
        if k.value not in allowed:
            raise SuiteError(
                file, k.line, f"unknown key '{k.value}' in {what} (expected: {', '.join(allowed)})"
            )
        out[str(k.value)] = v
    return out


def _case(node: YNode, file: str, number: int) -> Case:
    fields = _mapping(node, file, f"test case {number}", CASE_KEYS)
    for key in ("request", "expect"):
        if key not in fields:
            raise SuiteError(file, node.line, f"test case {number}: missing '{key}'")
    name = str(_plain(fields["name"])) if "name" in fields else f"case {number}"
    req = {
        k: _plain(v) for k, v in _mapping(fields["request"], file, "request", REQUEST_KEYS).items()
    }
    try:
        request = Request(**req)
    except RequestError as exc:
        raise SuiteError(file, fields["request"].line, f"{name}: bad request: {exc}") from None
    except TypeError as exc:
        raise SuiteError(file, fields["request"].line, f"{name}: bad request: {exc}") from None
    expect = {
        k: _plain(v) for k, v in _mapping(fields["expect"], file, "expect", EXPECT_KEYS).items()
    }
    if expect.get("decision") not in DECISIONS:
        raise SuiteError(
            file,
            fields["expect"].line,
            f"{name}: expect.decision must be one of {', '.join(DECISIONS)}",
        )
    for key in ("matched_rule_ids", "derived_tags"):
        if key in expect:
            if not isinstance(expect[key], list):
                raise SuiteError(
                    file, fields["expect"].line, f"{name}: expect.{key} must be a list"
                )
            expect[key] = tuple(str(v) for v in expect[key])
    if "derived_tags" in expect:
        expect["derived_tags"] = tuple(sorted({t.strip().lower() for t in expect["derived_tags"]}))
    return Case(name=name, line=node.line, request=request, expect=expect)


def run_suite(policy: CompiledPolicy, cases: list[Case]) -> list[Failure]:
    """Evaluate every case; return the failures (empty when all pass)."""
    failures: list[Failure] = []
    for case in cases:
        explain = "matched_rule_ids" in case.expect
        got = policy.evaluate(case.request, explain=explain)
        failure = Failure(case)
        for key, expected in case.expect.items():
            actual = getattr(got, key)
            if actual != expected:
                failure.mismatches.append((key, expected, actual))
        if failure.mismatches:
            failures.append(failure)
    return failures
