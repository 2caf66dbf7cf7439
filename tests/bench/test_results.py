"""Results: the JSON schema, finding the previous result, and the regression rule."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from proctor.bench import results


def _doc(p50: float = 400.0, p99: float = 1200.0, tput: float = 2000.0,
         spread: float = 0.02, when: str = "2026-11-22T04:00:00+00:00",
         concurrency: int = 16) -> dict[str, Any]:
    lat = {"count": 20000, "p50": p50, "p90": p50 * 1.5, "p99": p99, "p99_9": p99 * 2,
           "min": 100.0, "max": p99 * 3, "mean": p50 * 1.1}
    settings = {"target": "evaluate", "mode": "closed", "concurrency": concurrency,
                "rate": None, "procs": 2, "duration": 10.0, "warmup": 2.0,
                "server": "spawn", "policy": "examples/safety.yaml",
                "policy_sha": "71127b8a3735", "workload_sha": None, "batch_size": None}
    return {
        "schema": results.SCHEMA_ID,
        "when": when,
        "machine": {"cpus": 2, "cpu_model": "x", "python": "3.11.7", "platform": "linux",
                    "grpcio": "1.85.1"},
        "commit": "abc",
        "settings": settings,
        "settings_key": results.settings_key(settings),
        "workload": {},
        "figures": {
            "calls": 20000, "errors": 0, "errors_by_code": {}, "duration_s": 10.0,
            "throughput_per_s": tput, "latency_us": lat,
            "by_op": {"evaluate": {"calls": 20000, "latency_us": lat}},
            "intervals": [{"calls": 2000, "throughput_per_s": tput, "p50_us": p50,
                           "p99_us": p99}] * 10,
            "spread": {"p50": spread, "p99": spread, "throughput": spread},
        },
    }


def test_schema_accepts_a_result_and_names_what_is_wrong() -> None:
    doc = _doc()
    assert results.validate(doc) == []
    bad = copy.deepcopy(doc)
    del bad["figures"]["latency_us"]["p99"]
    bad["figures"]["calls"] = "many"
    bad["settings"]["mode"] = "half-open"
    problems = results.validate(bad)
    assert any("latency_us: missing 'p99'" in p for p in problems)
    assert any("figures.calls: expected integer" in p for p in problems)
    assert any("settings.mode" in p for p in problems)
    assert results.validate({"schema": "other"})


def test_a_real_regression_is_flagged() -> None:
    prev, new = _doc(p50=400, p99=1200), _doc(p50=520, p99=1700, when="2026-11-22T05:00:00")
    c = results.compare(prev, new)
    assert c["regression"]
    assert c["figures"]["p50"]["regression"] and c["figures"]["p99"]["regression"]
    assert c["figures"]["p50"]["change"] == 0.3
    text = results.format_comparison(c, "prev.json")
    assert "REGRESSION" in text and "regression: YES" in text


def test_noise_is_not_a_regression() -> None:
    # 5% slower, within the 10% threshold
    assert not results.compare(_doc(p50=400), _doc(p50=420))["regression"]
    # 25% slower, but the runs themselves spread by 15% across sub-intervals
    noisy = results.compare(_doc(p50=400, spread=0.15), _doc(p50=500, spread=0.15))
    assert not noisy["regression"]
    assert noisy["figures"]["p50"]["tolerance"] == 0.3
    # faster is never a regression, and is reported as an improvement
    better = results.compare(_doc(p50=400, tput=2000), _doc(p50=200, tput=3000))
    assert not better["regression"]
    assert better["figures"]["p50"]["improvement"]


def test_throughput_drop_is_a_regression() -> None:
    c = results.compare(_doc(tput=2000), _doc(tput=1500))
    assert c["figures"]["throughput"]["regression"] and c["regression"]


def test_threshold_is_configurable() -> None:
    assert results.compare(_doc(p50=400), _doc(p50=430), threshold=0.05)["regression"]


def test_previous_is_the_newest_with_the_same_settings(tmp_path: Path) -> None:
    def put(name: str, doc: dict[str, Any]) -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return path

    put("a.json", _doc(p50=100, when="2026-11-22T01:00:00+00:00"))
    put("b.json", _doc(p50=200, when="2026-11-22T02:00:00+00:00"))
    put("other.json", _doc(p50=300, when="2026-11-22T03:00:00+00:00", concurrency=64))
    put("junk.json", {"not": "a result"})
    (tmp_path / "broken.json").write_text("{")
    current = put("c.json", _doc(p50=999, when="2026-11-22T04:00:00+00:00"))
    found = results.find_previous(tmp_path, _doc()["settings_key"], exclude=current)
    assert found is not None
    assert found[0].name == "b.json"
    assert found[1]["figures"]["latency_us"]["p50"] == 200
    assert results.find_previous(tmp_path / "missing", "x") is None


def test_settings_key_separates_what_is_not_comparable() -> None:
    base = _doc()["settings"]
    keys = {results.settings_key(base)}
    for change in ({"concurrency": 64}, {"procs": 1}, {"target": "batch"},
                   {"policy_sha": "ffffffffffff"}):
        keys.add(results.settings_key({**base, **change}))
    keys.add(results.settings_key({**base, "mode": "open", "rate": 500.0}))
    assert len(keys) == 6
    # duration and warmup do not change what is compared
    assert results.settings_key({**base, "duration": 30.0}) == results.settings_key(base)
