"""The summary `proctor bench` prints: the figures table, the floor ratios, the warnings."""

from __future__ import annotations

from typing import Any

# A load process busier than this share of a core may itself be the limit.
GENERATOR_BUSY = 0.85


def summary(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    load = (f"{s['concurrency']} in flight" if s["mode"] == "closed"
            else f"{s['rate']:g} calls/s offered")
    lines = [f"proctor bench: {s['target']}, {s['mode']} loop, {load}, {s['procs']} load "
             f"process(es), {s['duration']:g} s after {s['warmup']:g} s warmup "
             f"(server: {s['server']})"]
    rows = [("proctor", doc["figures"])]
    if "floor" in doc:
        rows.append(("floor", doc["floor"]["figures"]))
        if "bidi_echo" in doc["floor"]:
            rows.append(("bidi", doc["floor"]["bidi_echo"]["figures"]))
    lines += _table(rows)
    if "floor" in doc:
        lines += _ratios(doc["floor"])
    f = doc["figures"]
    lines += _warnings(doc)
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
    lines += _cpu(rows)
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


def _table(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Calls, errors, throughput and latency percentiles: one line per run."""
    lines = [(f"{'':<8}{'calls':>10}{'errors':>8}{'calls/s':>11}{'p50 us':>10}{'p90 us':>10}"
              f"{'p99 us':>10}{'p99.9 us':>10}{'max us':>10}")]
    for name, f in rows:
        lat = f["latency_us"]
        lines.append(f"{name:<8}{f['calls']:>10,}{f['errors']:>8,}{f['throughput_per_s']:>11,.0f}"
                     f"{lat['p50']:>10,.0f}{lat['p90']:>10,.0f}{lat['p99']:>10,.0f}"
                     f"{lat['p99_9']:>10,.0f}{lat['max']:>10,.0f}")
    return lines


def _ratios(floor: dict[str, Any]) -> list[str]:
    """Proctor over the floor (and over the bidirectional echo), under the table's columns."""

    def fmt(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "-"

    lines = []
    ratio_rows = [("ratio", floor["ratios"])]
    if "bidi_echo" in floor:
        ratio_rows.append(("/bidi", floor["bidi_echo"]["ratios"]))
    for name, r in ratio_rows:
        lines.append(f"{name:<8}{'':>10}{'':>8}{fmt(r['throughput']):>11}"
                     f"{fmt(r['p50']):>10}{fmt(r['p90']):>10}{fmt(r['p99']):>10}"
                     f"{fmt(r['p99_9']):>10}{fmt(r['max']):>10}")
    r = floor["ratios"]
    if r.get("server_cpu_per_call"):
        lines.append(f"server CPU per call: {r['server_cpu_per_call']:.2f}x the floor's")
    return lines


def _warnings(doc: dict[str, Any]) -> list[str]:
    """Preflight calls that failed, and answers that differ from the engine's."""
    lines = []
    if doc["workload"]["preflight"]["errors"]:
        lines.append("WARNING: preflight calls failed: " + ", ".join(
            f"{k} {v}" for k, v in doc["workload"]["preflight"]["errors"].items()))
    mismatches = doc["workload"]["preflight"].get("engine_mismatches")
    if mismatches:
        lines.append(f"WARNING: {mismatches} preflight answers differ from the engine's decision "
                     "(is the server serving the same policy?)")
    return lines


def _cpu(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Server and load-process CPU per run, and a warning when the generator was busy."""
    lines = []
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
    return lines
