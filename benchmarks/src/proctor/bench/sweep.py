"""The runs after the measured one: the floor and the open-loop sweep.

The floor is the same load against an echo service answering replies of the
real sizes (and, for Evaluate, on a bidirectional stream); `ratios` says how
far Proctor is from it. The sweep runs the open loop at fractions of the first
run's throughput and draws latency against throughput and the histograms.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import histo, plot
from .floor import FLOOR_METHODS, EchoProcess, stream_item_bytes
from .loop import BenchError, LoadResult, run_load
from .spawn import free_port
from .workload import stream_plan


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
