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
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc

from proctor.client import credentials
from proctor.client._base import TOKEN_ENV, bearer_metadata
from proctor.v1 import decisions_pb2

from . import histo, plot, results
from .floor import FLOOR_METHODS, EchoProcess, stream_item_bytes
from .loop import BenchError, LoadResult, cpu_count, run_load
from .spawn import SpawnedServer, free_port
from .workload import (
    Plan,
    WorkloadError,
    augmented_policy_text,
    budget_units,
    build_plan,
    engine_decision,
    generate_requests,
    local_decisions,
    read_jsonl,
    stream_plan,
)

GENERATOR_BUSY = 0.85
_DECISIONS = {v.number: v.name.removeprefix("DECISION_").lower()
              for v in decisions_pb2.Decision.DESCRIPTOR.values}


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

        if args.spawn:
            server = SpawnedServer(policy_path, list(args.serve_arg), workdir=tmp / "serve")
            (tmp / "serve").mkdir()
            stack.callback(server.stop)
            server.start()
            address = server.address
            server_pid = server.proc.pid if server.proc else None
        else:
            address = args.server
            server_pid = None
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
            floor_result, bidi_result = run_floor(plan, pre["response_bytes"], load_kw)
            ff = floor_result.figures()
            doc["floor"] = {"figures": ff, "ratios": ratios(doc["figures"], ff),
                            "echo": "proctor.bench.floor (grpc.aio, raw bytes, same message sizes)"}
            if bidi_result is not None:
                bf = bidi_result.figures()
                doc["floor"]["bidi_echo"] = {
                    "figures": bf, "ratios": ratios(doc["figures"], bf),
                    "echo": "proctor.bench.floor, the Evaluate requests as messages on one "
                            "bidirectional stream per load channel (EvaluateStream's sizes)"}

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


# -- preflight, floor, sweep ----------------------------------------------------------------------


def preflight(address: str, plan: Any, timeout: float = 10.0, sample: int = 200) -> dict[str, Any]:
    """Each op's first payloads once, one at a time: errors, decisions, mean response sizes."""
    from .workload import reservation_prefix

    sizes: dict[str, list[int]] = {}
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    in_order: list[str] = []
    calls = ok = 0
    metadata = bearer_metadata()
    with grpc.insecure_channel(address) as raw:
        ch = grpc.intercept_channel(raw, credentials.with_metadata(metadata)) if metadata \
            else raw
        try:
            grpc.channel_ready_future(raw).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise BenchError(f"nothing answers on {address}") from None
        for op in plan.ops:
            if op.streaming:
                _preflight_stream(ch, op, sample, timeout, sizes, errors, decisions, in_order)
                calls += min(sample, len(op.payloads))
                ok += len(sizes.get(op.name, ()))
                continue
            call = ch.unary_unary(op.method)
            for n, payload in enumerate(op.payloads[:sample]):
                if op.fresh_reservation_id:
                    payload = reservation_prefix(f"preflight-{free_port()}-{n}") + payload
                calls += 1
                try:
                    reply = call(payload, timeout=timeout)
                except grpc.RpcError as e:
                    errors[f"{op.name}:{e.code().name}"] += 1
                    continue
                ok += 1
                sizes.setdefault(op.name, []).append(len(reply))
                if op.name == "evaluate":
                    resp = decisions_pb2.EvaluateResponse.FromString(reply)
                    name = _DECISIONS.get(resp.decision, str(resp.decision))
                    decisions[name] += 1
                    in_order.append(name)
    return {
        "calls": calls, "ok": ok, "errors": dict(errors),
        "decisions": dict(sorted(decisions.items())), "in_order": in_order,
        "response_bytes": {k: round(sum(v) / len(v)) for k, v in sizes.items()},
    }


def _preflight_stream(ch: grpc.Channel, op: Any, sample: int, timeout: float,
                      sizes: dict[str, list[int]], errors: Counter[str],
                      decisions: Counter[str], in_order: list[str]) -> None:
    """A streaming op's sample sent on one stream: each answer is an EvaluateBatchItem."""
    stream = ch.stream_stream(op.method)
    try:
        for reply in stream(iter(op.payloads[:sample]), timeout=timeout):
            item = decisions_pb2.EvaluateBatchItem.FromString(reply)
            if item.HasField("error"):
                errors[f"{op.name}:item {item.error.code}"] += 1
                continue
            sizes.setdefault(op.name, []).append(len(reply))
            name = _DECISIONS.get(item.response.decision, str(item.response.decision))
            decisions[name] += 1
            in_order.append(name)
    except grpc.RpcError as e:
        errors[f"{op.name}:{e.code().name}"] += 1


def engine_mismatches(policy: Any, requests: list[dict[str, Any]],
                      answered: list[str]) -> int | None:
    """How many preflight answers differ from the engine's decision (None: no policy, or
    the answers cannot be lined up because some calls failed)."""
    if policy is None or not answered or len(answered) != min(len(requests), 200):
        return None
    bad = 0
    for obj, got in zip(requests, answered, strict=False):
        want = engine_decision(policy, obj)
        if want == "invalid":
            continue
        # a presented, granted approval turns require_approval into allow (DESIGN section 5)
        if want != got and not (obj.get("approval_id") and want == "require_approval"):
            bad += 1
    return bad


def run_floor(plan: Any, response_bytes: dict[str, int], load_kw: dict[str, Any],
              ) -> tuple[LoadResult, LoadResult | None]:
    """The same load against the echo service answering replies of the real sizes; and,
    when the plan sends Evaluate, the same load again with those requests as messages on a
    bidirectional stream echo (EvaluateStream's reply sizes): the floor a stream can reach."""
    replies = {FLOOR_METHODS[name].rsplit("/", 1)[1]: size for name, size in response_bytes.items()}
    bidi = stream_plan(plan)
    if bidi is not None and "evaluate" in response_bytes:
        replies.setdefault("EvaluateStream", stream_item_bytes(response_bytes["evaluate"]))
    address = f"127.0.0.1:{free_port()}"
    with EchoProcess(address, response_bytes.get("evaluate", 160), replies) as echo:
        unary = run_load(address, plan.with_methods(FLOOR_METHODS), label="floor  ",
                         server_pid=echo.proc.pid, **load_kw)
        stream = None if bidi is None else run_load(
            address, bidi.with_methods(FLOOR_METHODS), label="bidi   ",
            server_pid=echo.proc.pid, **load_kw)
    return unary, stream


def ratios(proctor: dict[str, Any], floor: dict[str, Any]) -> dict[str, float | None]:
    """Proctor's figure over the floor's (latency: how many times slower; throughput: share)."""
    out: dict[str, float | None] = {}
    for key in ("p50", "p90", "p99", "p99_9", "max"):
        f = floor["latency_us"][key]
        out[key] = round(proctor["latency_us"][key] / f, 3) if f else None
    f = floor["throughput_per_s"]
    out["throughput"] = round(proctor["throughput_per_s"] / f, 3) if f else None
    f = floor.get("server_cpu_us_per_call")
    p = proctor.get("server_cpu_us_per_call")
    if f and p:
        out["server_cpu_per_call"] = round(p / f, 3)
    return out


def run_sweep(args: argparse.Namespace, address: str, plan: Any, main: LoadResult, mode: str,
              load_kw: dict[str, Any], pre: dict[str, Any], out: Path,
              server_pid: int | None) -> dict[str, Any]:
    """Open-loop runs at fractions of the first run's throughput (or of --rate); two PNGs."""
    base = main.figures()["throughput_per_s"] if mode == "closed" else float(args.rate)
    if base <= 0:
        raise BenchError("--sweep: the first run had no throughput to sweep under")
    fractions = [float(x) for x in args.sweep_fractions.split(",") if x.strip()]
    sweep_kw = dict(load_kw, mode="open", concurrency=0, warmup=min(args.warmup, 1.0),
                    duration=args.sweep_duration or min(args.duration, 5.0),
                    max_inflight=args.max_inflight)
    points: list[dict[str, Any]] = []
    floor_points: list[dict[str, Any]] = []
    hist_series = {f"{mode} loop (first run)": histo.bins(main.histogram)}
    echo: EchoProcess | None = None
    floor_plan = plan.with_methods(FLOOR_METHODS)
    try:
        if args.floor:
            replies = {FLOOR_METHODS[k].rsplit("/", 1)[1]: v
                       for k, v in pre["response_bytes"].items()}
            echo = EchoProcess(f"127.0.0.1:{free_port()}",
                               pre["response_bytes"].get("evaluate", 160), replies).wait_ready()
        for frac in fractions:
            rate = max(1.0, round(base * frac, 1))
            sweep_kw["rate"] = rate
            r = run_load(address, plan, label=f"sweep {frac:>4.0%}", server_pid=server_pid,
                         **sweep_kw)
            points.append(_point(frac, rate, r))
            if frac in (0.5, 1.0):
                hist_series[f"open loop at {rate:g}/s"] = histo.bins(r.histogram)
            if echo is not None:
                fr = run_load(echo.address, floor_plan, label=f"floor {frac:>4.0%}",
                              server_pid=echo.proc.pid, **sweep_kw)
                floor_points.append(_point(frac, rate, fr))
    finally:
        if echo is not None:
            echo.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("")
    title = (f"proctor bench --target {args.target}: open loop at fractions of "
             f"{base:,.0f} calls/s ({'closed-loop max' if mode == 'closed' else '--rate'})")
    latency_png = plot.latency_vs_throughput(points, Path(f"{stem}-latency.png"), title,
                                             floor_points or None)
    hist_png = plot.latency_histogram(hist_series, Path(f"{stem}-histogram.png"),
                                      f"proctor bench --target {args.target}: latency distribution")
    return {"base_throughput_per_s": base, "fractions": fractions, "points": points,
            "floor_points": floor_points, "latency_png": str(latency_png),
            "histogram_png": str(hist_png)}


def _point(frac: float, rate: float, r: LoadResult) -> dict[str, Any]:
    f = r.figures()
    return {"fraction": frac, "rate": rate, "throughput_per_s": f["throughput_per_s"],
            "calls": f["calls"], "errors": f["errors"], "p50_us": f["latency_us"]["p50"],
            "p90_us": f["latency_us"]["p90"], "p99_us": f["latency_us"]["p99"],
            "max_us": f["latency_us"]["max"], "server_cpu_share": f.get("server_cpu_share"),
            "load_cpu_share": f.get("load_cpu_share")}


# -- printing -------------------------------------------------------------------------------------


def summary(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    load = (f"{s['concurrency']} in flight" if s["mode"] == "closed"
            else f"{s['rate']:g} calls/s offered")
    lines = [f"proctor bench: {s['target']}, {s['mode']} loop, {load}, {s['procs']} load "
             f"process(es), {s['duration']:g} s after {s['warmup']:g} s warmup "
             f"(server: {s['server']})"]
    head = (f"{'':<8}{'calls':>10}{'errors':>8}{'calls/s':>11}{'p50 us':>10}{'p90 us':>10}"
            f"{'p99 us':>10}{'p99.9 us':>10}{'max us':>10}")
    lines.append(head)
    rows = [("proctor", doc["figures"])]
    if "floor" in doc:
        rows.append(("floor", doc["floor"]["figures"]))
        if "bidi_echo" in doc["floor"]:
            rows.append(("bidi", doc["floor"]["bidi_echo"]["figures"]))
    for name, f in rows:
        lat = f["latency_us"]
        lines.append(f"{name:<8}{f['calls']:>10,}{f['errors']:>8,}{f['throughput_per_s']:>11,.0f}"
                     f"{lat['p50']:>10,.0f}{lat['p90']:>10,.0f}{lat['p99']:>10,.0f}"
                     f"{lat['p99_9']:>10,.0f}{lat['max']:>10,.0f}")
    if "floor" in doc:
        r = doc["floor"]["ratios"]

        def fmt(v: float | None) -> str:
            return f"{v:.2f}x" if v is not None else "-"

        ratio_rows = [("ratio", r)]
        if "bidi_echo" in doc["floor"]:
            ratio_rows.append(("/bidi", doc["floor"]["bidi_echo"]["ratios"]))
        for name, r in ratio_rows:
            lines.append(f"{name:<8}{'':>10}{'':>8}{fmt(r['throughput']):>11}"
                         f"{fmt(r['p50']):>10}{fmt(r['p90']):>10}{fmt(r['p99']):>10}"
                         f"{fmt(r['p99_9']):>10}{fmt(r['max']):>10}")
        r = doc["floor"]["ratios"]
        if r.get("server_cpu_per_call"):
            lines.append(f"server CPU per call: {r['server_cpu_per_call']:.2f}x the floor's")
    f = doc["figures"]
    if doc["workload"]["preflight"]["errors"]:
        lines.append("WARNING: preflight calls failed: " + ", ".join(
            f"{k} {v}" for k, v in doc["workload"]["preflight"]["errors"].items()))
    mismatches = doc["workload"]["preflight"].get("engine_mismatches")
    if mismatches:
        lines.append(f"WARNING: {mismatches} preflight answers differ from the engine's decision "
                     "(is the server serving the same policy?)")
    if f["errors_by_code"]:
        lines.append("errors by status: " + ", ".join(f"{k} {v:,}" for k, v in
                                                       f["errors_by_code"].items()))
    if len(f["by_op"]) > 1:
        for name, o in f["by_op"].items():
            lines.append(f"  {name:<9} {o['calls']:>9,} calls  p50 {o['latency_us']['p50']:,.0f} us"
                         f"  p99 {o['latency_us']['p99']:,.0f} us")
    if "send_lag_us" in f:
        lines.append(f"open loop: service time p50 {f['service_time_us']['p50']:,.0f} us, "
                     f"p99 {f['service_time_us']['p99']:,.0f} us; generator send lag p99 "
                     f"{f['send_lag_us']['p99']:,.0f} us")
    for name, fig in rows:
        cpu = []
        if fig.get("server_cpu_share") is not None:
            cpu.append(f"server {fig['server_cpu_share']:.2f} cores")
        if fig.get("server_cpu_us_per_call") is not None:
            cpu.append(f"{fig['server_cpu_us_per_call']:,.0f} us of server CPU per call")
        if fig.get("load_cpu_share"):
            cpu.append("load processes " + ", ".join(f"{x:.2f}" for x in fig["load_cpu_share"]))
        if cpu:
            lines.append(f"cpu ({name}): " + "; ".join(cpu))
        if any(x >= GENERATOR_BUSY for x in fig.get("load_cpu_share", [])):
            lines.append(f"WARNING ({name}): a load process was busy {GENERATOR_BUSY:.0%}+ of a "
                         "core: the generator may be the limit (add --procs, or more cores)")
    sp = f["spread"]
    lines.append(f"run-to-run spread (over {len(f['intervals'])} sub-intervals): p50 "
                 f"{sp['p50']:.1%}, p99 {sp['p99']:.1%}, throughput {sp['throughput']:.1%}")
    if "sweep" in doc:
        lines.append("sweep (open loop):  rate -> calls/s  p50 us  p99 us")
        for p in doc["sweep"]["points"]:
            lines.append(f"  {p['rate']:>10,.0f} -> {p['throughput_per_s']:>8,.0f}"
                         f"  {p['p50_us']:>8,.0f}  {p['p99_us']:>8,.0f}")
        lines.append(f"  {doc['sweep']['latency_png']}\n  {doc['sweep']['histogram_png']}")
    return "\n".join(lines)
