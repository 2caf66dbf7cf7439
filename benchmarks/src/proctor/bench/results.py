"""Results: the JSON document of one run, its schema, and the comparison with the previous run.

A result records the machine, the commit, the settings and the figures. Runs
write outside the checkout: to `--out`, or by default to the results directory
(`$PROCTOR_BENCH_RESULTS`, else `$XDG_CACHE_HOME/proctor/bench`, else
`~/.cache/proctor/bench`), so a benchmark never dirties `git status`. The
committed baselines, one per benchmark, live in `benchmarks/baselines/`.

The previous result "of the same settings" is the newest file in the results
directory whose `settings_key` (target, mode, concurrency or rate, procs,
policy, workload, batch size) is equal; without one, the committed baseline
with that key.

Regression rule. Each run measures its own noise: the figures of its
sub-intervals (10 by default) give a relative spread (standard deviation over
mean) for p50, p99 and throughput. Two runs are compared with a tolerance of

    tolerance = max(threshold, 2 x the larger of the two runs' spreads)

(threshold: --regression-threshold, default 10%). A latency regression is
new > previous x (1 + tolerance); a throughput regression is
new < previous x (1 - tolerance). So a noisy run needs a larger change
before it is flagged, and a quiet one is held to the threshold.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_ID = "proctor-bench/1"
DEFAULT_THRESHOLD = 0.10
ROOT = Path(__file__).resolve().parents[2]
# benchmarks/baselines in a checkout (absent when proctor-bench is installed from a wheel)
BASELINES = Path(__file__).resolve().parents[3] / "baselines"


def results_dir() -> Path:
    """Where runs write by default: never inside the checkout."""
    explicit = os.environ.get("PROCTOR_BENCH_RESULTS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "proctor" / "bench"

_LATENCY = {
    "type": "object",
    "required": ["count", "p50", "p90", "p99", "p99_9", "min", "max", "mean"],
    "properties": {k: {"type": "number", "minimum": 0}
                   for k in ("count", "p50", "p90", "p99", "p99_9", "min", "max", "mean")},
}
_FIGURES = {
    "type": "object",
    "required": ["calls", "errors", "errors_by_code", "duration_s", "throughput_per_s",
                 "latency_us", "by_op", "intervals", "spread"],
    "properties": {
        "calls": {"type": "integer", "minimum": 0},
        "errors": {"type": "integer", "minimum": 0},
        "errors_by_code": {"type": "object", "additionalProperties": {"type": "integer"}},
        "duration_s": {"type": "number", "minimum": 0},
        "throughput_per_s": {"type": "number", "minimum": 0},
        "server_cpu_share": {"type": "number", "minimum": 0},
        "server_cpu_us_per_call": {"type": "number", "minimum": 0},
        "load_cpu_share": {"type": "array", "items": {"type": "number", "minimum": 0}},
        "latency_us": _LATENCY,
        "service_time_us": _LATENCY,
        "send_lag_us": _LATENCY,
        "by_op": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["calls", "latency_us"],
            "properties": {"calls": {"type": "integer"}, "latency_us": _LATENCY}}},
        "intervals": {"type": "array", "items": {
            "type": "object", "required": ["calls", "throughput_per_s", "p50_us", "p99_us"],
            "properties": {"calls": {"type": "integer", "minimum": 0},
                           "throughput_per_s": {"type": "number", "minimum": 0},
                           "p50_us": {"type": "number", "minimum": 0},
                           "p99_us": {"type": "number", "minimum": 0}}}},
        "spread": {"type": "object", "required": ["p50", "p99", "throughput"],
                   "properties": {k: {"type": "number", "minimum": 0}
                                  for k in ("p50", "p99", "throughput")}},
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "type": "object",
    "required": ["schema", "when", "machine", "commit", "settings", "settings_key", "workload",
                 "figures"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "when": {"type": "string"},
        "machine": {
            "type": "object",
            "required": ["cpus", "cpu_model", "python", "platform", "grpcio"],
            "properties": {"cpus": {"type": "integer", "minimum": 1},
                           "cpu_model": {"type": "string"}, "python": {"type": "string"},
                           "platform": {"type": "string"}, "grpcio": {"type": "string"}},
        },
        "commit": {"type": ["string", "null"]},
        "settings": {
            "type": "object",
            "required": ["target", "mode", "procs", "duration", "warmup", "server"],
            "properties": {
                "target": {"enum": ["evaluate", "stream", "batch", "reserve", "mix"]},
                "mode": {"enum": ["closed", "open"]},
                "concurrency": {"type": ["integer", "null"], "minimum": 1},
                "rate": {"type": ["number", "null"], "minimum": 0},
                "procs": {"type": "integer", "minimum": 1},
                "duration": {"type": "number", "minimum": 0},
                "warmup": {"type": "number", "minimum": 0},
                "server": {"type": "string"},
            },
        },
        "settings_key": {"type": "string"},
        "workload": {"type": "object"},
        "figures": _FIGURES,
        "floor": {"type": "object", "required": ["figures", "ratios"], "properties": {
            "figures": _FIGURES,
            "ratios": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
            "bidi_echo": {"type": "object", "required": ["figures", "ratios"], "properties": {
                "figures": _FIGURES,
                "ratios": {"type": "object",
                           "additionalProperties": {"type": ["number", "null"]}},
            }},
        }},
        "sweep": {"type": "object"},
        "comparison": {"type": ["object", "null"]},
        "note": {"type": "string"},
    },
}


# -- a small JSON Schema validator (the subset SCHEMA uses) --------------------------------------


def validate(doc: Any, schema: dict[str, Any] = SCHEMA, path: str = "$") -> list[str]:
    """Every way `doc` breaks `schema`, as 'PATH: what' strings; [] when it conforms."""
    errors: list[str] = []
    if "const" in schema and doc != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {doc!r}")
    if "enum" in schema and doc not in schema["enum"]:
        errors.append(f"{path}: {doc!r} not one of {schema['enum']}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(doc, t) for t in types):
            return [*errors, f"{path}: expected {'/'.join(types)}, got {type(doc).__name__}"]
    if "minimum" in schema and _is_type(doc, "number") and doc < schema["minimum"]:
        errors.append(f"{path}: {doc} below {schema['minimum']}")
    if isinstance(doc, dict):
        for key in schema.get("required", ()):
            if key not in doc:
                errors.append(f"{path}: missing {key!r}")
        props = schema.get("properties", {})
        for key, value in doc.items():
            if key in props:
                errors += validate(value, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += validate(value, schema["additionalProperties"], f"{path}.{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    return errors


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return {
        "object": isinstance(value, dict), "array": isinstance(value, list),
        "string": isinstance(value, str), "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
    }[name]


# -- machine, commit, settings ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import grpc

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "cpus": os.cpu_count() or 1,
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpcio": grpc.__version__,
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
    }


def git_commit(root: Path = ROOT) -> str | None:
    """`git rev-parse HEAD` (read-only), "+dirty" when the tree has changes; None without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def settings_key(settings: dict[str, Any]) -> str:
    """What makes two runs comparable: target, mode, load, procs, policy, workload, batch size."""
    load = (f"c{settings.get('concurrency')}" if settings["mode"] == "closed"
            else f"r{settings.get('rate')}")
    parts = [settings["target"], settings["mode"], load, f"p{settings['procs']}",
             f"policy={settings.get('policy_sha') or settings.get('policy') or '-'}",
             f"workload={settings.get('workload_sha') or '-'}",
             f"batch={settings.get('batch_size') or '-'}"]
    return " ".join(parts)


def file_sha(path: str | os.PathLike[str] | None) -> str | None:
    if not path:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def default_path(results_dir: Path, settings: dict[str, Any], when: datetime) -> Path:
    load = (f"c{settings.get('concurrency')}" if settings["mode"] == "closed"
            else f"r{settings.get('rate'):g}")
    stamp = when.strftime("%Y%m%dT%H%M%SZ")
    return results_dir / f"bench-{settings['target']}-{settings['mode']}-{load}-{stamp}.json"


def now() -> datetime:
    return datetime.now(UTC)


# -- comparison ----------------------------------------------------------------------------------


def find_previous(
    results_dir: Path, key: str, exclude: Path | None = None
) -> tuple[Path, dict[str, Any]] | None:
    """The newest result in `results_dir` with this settings key (by its `when`)."""
    best: tuple[str, Path, dict[str, Any]] | None = None
    if not results_dir.is_dir():
        return None
    for path in results_dir.glob("*.json"):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
            continue
        if doc.get("settings_key") != key:
            continue
        when = str(doc.get("when", ""))
        if best is None or when > best[0]:
            best = (when, path, doc)
    return (best[1], best[2]) if best else None


def compare(previous: dict[str, Any], current: dict[str, Any],
            threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    """Per figure: previous, current, change, tolerance and whether it regressed."""
    pf, cf = previous["figures"], current["figures"]
    rows: dict[str, Any] = {}
    for name, spread_key, higher_is_worse in (("p50", "p50", True), ("p99", "p99", True),
                                              ("throughput", "throughput", False)):
        if name == "throughput":
            old, new = pf["throughput_per_s"], cf["throughput_per_s"]
        else:
            old, new = pf["latency_us"][name], cf["latency_us"][name]
        spread = max(pf.get("spread", {}).get(spread_key, 0.0),
                     cf.get("spread", {}).get(spread_key, 0.0))
        tolerance = max(threshold, 2 * spread)
        change = (new - old) / old if old else 0.0
        regressed = change > tolerance if higher_is_worse else change < -tolerance
        improved = change < -tolerance if higher_is_worse else change > tolerance
        rows[name] = {"previous": old, "current": new, "change": round(change, 4),
                      "tolerance": round(tolerance, 4), "regression": bool(regressed),
                      "improvement": bool(improved)}
    return {
        "previous_when": previous.get("when"),
        "previous_commit": previous.get("commit"),
        "threshold": threshold,
        "figures": rows,
        "regression": any(r["regression"] for r in rows.values()),
    }


def format_comparison(comparison: dict[str, Any], previous_path: Path | str) -> str:
    lines = [f"compared with {previous_path} ({comparison['previous_when']}, "
             f"commit {comparison['previous_commit']}):"]
    for name, r in comparison["figures"].items():
        unit = "/s" if name == "throughput" else " us"
        flag = "REGRESSION" if r["regression"] else ("better" if r["improvement"] else "ok")
        lines.append(
            f"  {name:<10} {r['previous']:>12,.1f}{unit} -> {r['current']:>12,.1f}{unit} "
            f"{r['change']:+8.1%}  (tolerance {r['tolerance']:.1%})  {flag}"
        )
    lines.append("  regression: " + ("YES" if comparison["regression"] else "no"))
    return "\n".join(lines)


def write(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)


def save_result(doc: dict[str, Any], out: str | os.PathLike[str] | None, name: str) -> Path:
    """Write a benchmark's JSON to `out`, or to results_dir()/NAME-<UTC time>.json."""
    path = Path(out) if out else (
        results_dir() / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json")
    write(doc, path)
    return path
