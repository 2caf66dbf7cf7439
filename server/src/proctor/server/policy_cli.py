"""proctor check | test | eval: the policy engine on the command line.

Kept import-light (the engine only, imported when a command runs) so that
`proctor eval` starts fast; nothing here touches grpc.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proctor.engine import CompiledPolicy

DEFAULT_MAX_POLICY_BYTES = 64 * 1024 * 1024  # engine.DEFAULT_MAX_BYTES, without importing it

EVAL_FIELDS = (
    "request_id",
    "run_id",
    "tenant",
    "delegation_path",
    "topic",
    "risk_tags",
    "labels",
    "approval_id",
    "explain",
)


def register(subparsers: Any) -> None:
    check = subparsers.add_parser(
        "check",
        help="validate policies and warn about rules that can never decide",
        description="Validate and lint policies. Exit 1 on an error; warnings alone exit 0.",
    )
    check.add_argument("policies", nargs="+", metavar="POLICY")
    _max_bytes_flag(check)
    check.set_defaults(func=run_check)

    test = subparsers.add_parser(
        "test",
        help="run a policy test suite (*.tests.yaml)",
        description="Run a policy test suite; exit 1 on any failure.",
    )
    test.add_argument("policy", metavar="POLICY")
    test.add_argument(
        "tests",
        nargs="?",
        metavar="TESTS",
        help="the suite (default: POLICY with .yaml replaced by .tests.yaml)",
    )
    _max_bytes_flag(test)
    test.set_defaults(func=run_test)

    ev = subparsers.add_parser(
        "eval",
        help="decide JSON-lines requests offline",
        description=(
            "Read one JSON request per line (the fields of EvaluateRequest), write one JSON "
            "decision per line. Exit 0 whatever the decisions; non-zero on a bad policy or a "
            "malformed line."
        ),
    )
    ev.add_argument("--policy", required=True, metavar="P")
    ev.add_argument("--input", default="-", metavar="FILE", help="FILE or - for stdin (default)")
    ev.add_argument("--explain", action="store_true", help="fill matched_rule_ids for every line")
    _max_bytes_flag(ev)
    ev.set_defaults(func=run_eval)


def _max_bytes_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-policy-bytes", type=int, default=DEFAULT_MAX_POLICY_BYTES, metavar="N",
        help="refuse a policy file larger than N bytes, or whose YAML aliases expand past it",
    )


def load(path: str, args: argparse.Namespace) -> CompiledPolicy:
    """Read and compile one policy file; PolicyError on any problem, never a hang.

    The engine leaves the garbage collector alone; a command compiles once and
    keeps what it built, so the collector is paused meanwhile (it would rescan
    the millions of new objects of a large policy again and again).
    """
    from proctor.engine import Limits, PolicyError, load_policy

    max_bytes = getattr(args, "max_policy_bytes", DEFAULT_MAX_POLICY_BYTES)
    if max_bytes < 1:
        raise PolicyError(f"--max-policy-bytes must be at least 1, got {max_bytes}", file=path)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return load_policy(path, limits=Limits(max_bytes=max_bytes))
    finally:
        if was_enabled:
            gc.enable()


# -- check ---------------------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    from proctor.engine import PolicyError
    from proctor.engine.lint import lint

    failed = False
    for path in args.policies:
        try:
            policy = load(path, args)
        except PolicyError as exc:
            print(str(exc))
            failed = True
            continue
        findings = lint(policy)
        for finding in findings:
            print(str(finding))
        print(
            f"{path}: ok ({policy.rule_count} rules, {len(policy.budgets)} budgets, "
            f"policy_version {policy.policy_version}, {len(findings)} warnings)"
        )
    return 1 if failed else 0


# -- test ----------------------------------------------------------------------------------------


def default_suite_path(policy: str) -> str:
    for ext in (".yaml", ".yml"):
        if policy.endswith(ext):
            return policy[: -len(ext)] + ".tests" + ext
    return policy + ".tests.yaml"


def run_test(args: argparse.Namespace) -> int:
    from proctor.engine import PolicyError, read_text_file
    from proctor.engine.suites import SuiteError, load_suite, run_suite

    suite_path = args.tests or default_suite_path(args.policy)
    try:
        policy = load(args.policy, args)
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        text = read_text_file(suite_path, max_bytes=args.max_policy_bytes, what="test suite")
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    try:
        cases = load_suite(text, suite_path)
    except SuiteError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    failures = run_suite(policy, cases)
    for failure in failures:
        print(failure.render(suite_path))
    passed = len(cases) - len(failures)
    print(f"{suite_path}: {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


# -- eval ----------------------------------------------------------------------------------------


class _BadLine(Exception):
    pass


def _request_from(obj: Any) -> tuple[Any, bool]:
    from proctor.engine import Request, RequestError

    if not isinstance(obj, dict):
        raise _BadLine(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(EVAL_FIELDS))
    if unknown:
        raise _BadLine(f"unknown field {unknown[0]!r} (fields: {', '.join(EVAL_FIELDS)})")
    if "topic" not in obj:
        raise _BadLine("topic: required")
    explain = obj.get("explain", False)
    if not isinstance(explain, bool):
        raise _BadLine("explain: must be true or false")
    approval_id = obj.get("approval_id", "")
    if not isinstance(approval_id, str) or len(approval_id) > 128:
        raise _BadLine("approval_id: a string of at most 128 characters")
    for key in ("risk_tags", "delegation_path"):
        if obj.get(key) is not None and not isinstance(obj[key], list):
            raise _BadLine(f"{key}: must be a list of strings")
    labels = obj.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise _BadLine("labels: must be an object of strings")
    try:
        request = Request(
            topic=obj["topic"],
            risk_tags=obj.get("risk_tags") or (),
            delegation_path=obj.get("delegation_path") or (),
            tenant=obj.get("tenant", ""),
            run_id=obj.get("run_id", ""),
            request_id=obj.get("request_id", ""),
            labels=labels,
        )
    except RequestError as exc:
        raise _BadLine(str(exc)) from None
    return request, explain


def run_eval(args: argparse.Namespace) -> int:
    from proctor.engine import PolicyError

    try:
        policy = load(args.policy, args)
    except PolicyError as exc:
        print(f"proctor eval: {exc}", file=sys.stderr)
        return 2
    name = "<stdin>" if args.input == "-" else args.input
    try:
        stream: IO[str] = (
            sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
        )
    except OSError as exc:
        print(f"proctor eval: cannot read {args.input}: {exc.strerror}", file=sys.stderr)
        return 2
    interactive = args.input == "-"
    out = sys.stdout
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
    try:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise _BadLine(f"not valid JSON: {exc}") from None
                request, explain = _request_from(obj)
            except _BadLine as exc:
                out.flush()
                print(f"proctor eval: {name}:{number}: {exc}", file=sys.stderr)
                return 1
            d = policy.evaluate(request, explain=explain or args.explain)
            out.write(
                dumps(
                    {
                        "decision": d.decision,
                        "rule_id": d.rule_id,
                        "reason": d.reason,
                        "policy_version": d.policy_version,
                        "matched_rule_ids": list(d.matched_rule_ids),
                    }
                )
                + "\n"
            )
            if interactive:
                out.flush()
    except UnicodeDecodeError as exc:
        print(f"proctor eval: {name}: input is not UTF-8: {exc.reason}", file=sys.stderr)
        return 1
    finally:
        if stream is not sys.stdin:
            stream.close()
    out.flush()
    return 0
