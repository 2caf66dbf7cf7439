"""One `proctor bench` run from start to end: workload, server, load, floor, sweep, results.

Order: build the workload (and, for --spawn, the policy the server gets); start
or reach the server; a preflight sends a sample of the workload once, one call
at a time, to check it is answered and to learn the real response sizes and the
decision mix; then the measured run; then the floor (the same run against the
echo service, replies of the real sizes); then the sweep; then the result file,
the summary and the comparison with the previous result.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from proctor.client._base import TOKEN_ENV, bearer_metadata

from . import plot, results
from .loop import BenchError, cpu_count, run_load
from .preflight import engine_mismatches, preflight
from .spawn import SpawnedServer
from .summary import summary
from .sweep import ratios, run_floor, run_sweep
from .workload import (
    Plan,
    WorkloadError,
    augmented_policy_text,
    budget_units,
    build_plan,
    generate_requests,
    local_decisions,
    read_jsonl,
)


def run(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "token_file", None):
            # The load processes read it from the environment (bearer_metadata).
            os.environ[TOKEN_ENV] = bearer_metadata(None, args.token_file)[0][1][7:]
        return _run(args)
    except (BenchError, WorkloadError, RuntimeError, TimeoutError, OSError) as e:
        print(f"proctor bench: error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    if bool(args.spawn) == bool(args.server):
        raise BenchError("give exactly one of --spawn (with --policy) or --server HOST:PORT")
    if args.spawn and not args.policy:
        raise BenchError("--spawn needs --policy POLICY.yaml (the policy the server serves)")
    if args.server and not (args.policy or args.workload):
        raise BenchError("--server needs --policy (to generate a request mix) or "
                         "--workload FILE.jsonl")
    if args.rate is None and args.concurrency is None:
        args.concurrency = 16
    if args.concurrency is not None and args.concurrency < 1:
        raise BenchError("--concurrency must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise BenchError("--rate must be positive")
    if args.duration <= 0 or args.warmup < 0:
        raise BenchError("--duration must be positive and --warmup not negative")
    if args.procs is None:
        args.procs = max(1, cpu_count() // 2)
    if args.procs < 1:
        raise BenchError("--procs must be at least 1")
    if args.sweep and not plot.available():
        raise BenchError(plot.INSTALL_HINT)


def _prepare_workload(args: argparse.Namespace, tmp: Path,
                      ) -> tuple[Any, str | None, bool, list[Any], str, Plan]:
    """Load the policy, pick budget units, read or generate the requests, build the plan.

    Returns (policy, policy path to serve, whether a bench budget was added, requests,
    where they came from, plan)."""
    policy = None
    policy_path = args.policy
    augmented = False
    if args.policy:
        from proctor.engine import PolicyError, load_policy

        try:
            policy = load_policy(args.policy)
        except PolicyError as e:
            raise BenchError(f"--policy: {e}") from None
    units = [args.unit] if args.unit else (budget_units(policy) if policy else [])
    if args.target in ("reserve", "mix") and not units:
        if args.spawn:
            policy_path = str(tmp / "policy-with-bench-budget.yaml")
            Path(policy_path).write_text(augmented_policy_text(Path(args.policy).read_text()))
            units, augmented = ["bench-calls"], True
        elif args.target == "reserve":
            raise WorkloadError(
                "--target reserve needs budgets: the policy has none (give --unit NAME of a "
                "budget the server has, or --spawn, which adds a bench budget)")
    if args.workload:
        requests = read_jsonl(args.workload)
        source = str(args.workload)
    else:
        assert policy is not None
        requests = generate_requests(policy, args.requests, seed=args.seed)
        source = f"generated from {args.policy} ({args.requests} requests, seed {args.seed})"
    plan = build_plan(args.target, requests, units=units, batch_size=args.batch_size,
                      reserve_ttl=args.reserve_ttl)
    return policy, policy_path, augmented, requests, source, plan


def _settings(args: argparse.Namespace, mode: str, address: str, augmented: bool,
              plan: Plan) -> dict[str, Any]:
    """The run's settings as recorded in the result (and keyed for comparison)."""
    return {
        "target": args.target, "mode": mode,
        "concurrency": args.concurrency if mode == "closed" else None,
        "rate": args.rate if mode == "open" else None,
        "max_inflight": args.max_inflight if mode == "open" else None,
        "procs": max(1, min(args.procs, args.concurrency)) if mode == "closed" else args.procs,
        "duration": args.duration, "warmup": args.warmup,
        "server": "spawn" if args.spawn else address,
        "serve_args": list(args.serve_arg) if args.spawn else [],
        "policy": args.policy, "policy_sha": results.file_sha(args.policy),
        "policy_augmented_with_bench_budget": augmented,
        "workload": args.workload, "workload_sha": results.file_sha(args.workload),
        "batch_size": plan.description["batch_size"],
        "intervals": args.intervals, "timeout": args.timeout,
    }


def _run(args: argparse.Namespace) -> int:
    _check_args(args)
    mode = "closed" if args.rate is None else "open"
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="proctor-bench-")))
        policy, policy_path, augmented, requests, source, plan = _prepare_workload(args, tmp)

        address, server_pid = _server(args, policy_path, tmp, stack)
        pre = preflight(address, plan, timeout=args.timeout)
        if pre["ok"] == 0:
            raise BenchError(f"preflight: no call to {address} succeeded: {pre['errors']}")
        pre["engine_mismatches"] = engine_mismatches(policy, requests, pre["in_order"])

        settings = _settings(args, mode, address, augmented, plan)
        load_kw = dict(mode=mode, warmup=args.warmup, duration=args.duration,
                       concurrency=args.concurrency or 0, rate=args.rate or 0.0,
                       procs=args.procs, max_inflight=args.max_inflight,
                       intervals=args.intervals, timeout=args.timeout,
                       progress=not args.no_progress)
        main = run_load(address, plan, label="proctor", server_pid=server_pid, **load_kw)
        doc: dict[str, Any] = {
            "schema": results.SCHEMA_ID,
            "when": results.now().isoformat(timespec="seconds"),
            "machine": results.machine(),
            "commit": results.git_commit(),
            "settings": settings,
            "settings_key": results.settings_key(settings),
            "workload": {
                "source": source, **plan.description,
                "request_bytes": plan.request_bytes,
                "response_bytes": pre["response_bytes"],
                "engine_decisions": local_decisions(policy, requests) if policy else None,
                "preflight": {k: pre[k] for k in ("calls", "ok", "errors", "decisions",
                                                  "engine_mismatches")},
            },
            "figures": main.figures(),
        }
        if args.note:
            doc["note"] = args.note
        if args.floor:
            doc["floor"] = _floor(doc["figures"], plan, pre, load_kw)

        when = results.now()
        results_dir = Path(args.results_dir) if args.results_dir else results.results_dir()
        out = Path(args.out) if args.out else results.default_path(results_dir, settings, when)
        if args.sweep:
            doc["sweep"] = run_sweep(args, address, plan, main, mode, load_kw, pre, out,
                                     server_pid)
        previous = find_previous(results_dir, out, doc)
        if previous is not None:
            doc["comparison"] = results.compare(previous[1], doc, args.regression_threshold)
        problems = results.validate(doc)
        if problems:
            raise BenchError("result does not match its schema: " + "; ".join(problems[:5]))
        results.write(doc, out)

    return _report(args, doc, previous, out)


def _server(args: argparse.Namespace, policy_path: str | None, tmp: Path,
            stack: ExitStack) -> tuple[str, int | None]:
    """--spawn: a server of our own (stopped with `stack`); else --server. Address and pid."""
    if not args.spawn:
        return args.server, None
    server = SpawnedServer(policy_path, list(args.serve_arg), workdir=tmp / "serve")
    (tmp / "serve").mkdir()
    stack.callback(server.stop)
    server.start()
    return server.address, server.proc.pid if server.proc else None


def _floor(figures: dict[str, Any], plan: Plan, pre: dict[str, Any],
           load_kw: dict[str, Any]) -> dict[str, Any]:
    """The result's `floor`: the echo runs' figures and Proctor's ratios to them."""
    floor_result, bidi_result = run_floor(plan, pre["response_bytes"], load_kw)
    ff = floor_result.figures()
    floor: dict[str, Any] = {
        "figures": ff, "ratios": ratios(figures, ff),
        "echo": "proctor.bench.floor (grpc.aio, raw bytes, same message sizes)"}
    if bidi_result is not None:
        bf = bidi_result.figures()
        floor["bidi_echo"] = {
            "figures": bf, "ratios": ratios(figures, bf),
            "echo": "proctor.bench.floor, the Evaluate requests as messages on one "
                    "bidirectional stream per load channel (EvaluateStream's sizes)"}
    return floor


def _report(args: argparse.Namespace, doc: dict[str, Any], previous: Any, out: Path) -> int:
    """Print the summary and the comparison; exit 3 on a regression with --fail-on-regression."""
    print(summary(doc), flush=True)
    if previous is not None:
        print(results.format_comparison(doc["comparison"], previous[0]), flush=True)
    else:
        print("no previous result with these settings to compare with", flush=True)
    print(f"wrote {out}", flush=True)
    if previous is not None and doc["comparison"]["regression"] and args.fail_on_regression:
        return 3
    return 0


def find_previous(results_dir: Path, out: Path, doc: dict[str, Any]) -> Any:
    found = results.find_previous(results_dir, doc["settings_key"], exclude=out)
    if found is None and out.parent.resolve() != results_dir.resolve():
        found = results.find_previous(out.parent, doc["settings_key"], exclude=out)
    if found is None:
        found = results.find_previous(results.BASELINES, doc["settings_key"], exclude=out)
    return found
