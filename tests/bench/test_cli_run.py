"""`proctor bench` end to end against a spawned `proctor serve` (seconds, not minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proctor.bench import plot, results
from proctor.server.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
PROCTOR = Path(sys.executable).parent / "proctor"


def _bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(PROCTOR)] if PROCTOR.exists() else [sys.executable, "-m", "proctor.server"]
    return subprocess.run([*cmd, "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def _sane(f: dict[str, Any]) -> None:
    lat = f["latency_us"]
    assert f["calls"] > 0 and f["errors"] == 0, f["errors_by_code"]
    assert f["throughput_per_s"] > 0
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]


def test_short_closed_loop_run_with_floor_then_a_comparison(tmp_path: Path) -> None:
    out = tmp_path / "first.json"
    common = ["--spawn", "--policy", str(SEED), "--duration", "1", "--warmup", "0.2",
              "--concurrency", "4", "--procs", "1", "--results-dir", str(tmp_path)]
    r = _bench(*common, "--floor", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(out.read_text())
    assert results.validate(doc) == []
    _sane(doc["figures"])
    _sane(doc["floor"]["figures"])
    assert doc["floor"]["ratios"]["p50"] > 0
    # Beside the unary echo, the same requests on a bidirectional stream echo (issue 22).
    bidi = doc["floor"]["bidi_echo"]
    _sane(bidi["figures"])
    assert set(bidi["figures"]["by_op"]) == {"stream"} and bidi["ratios"]["p50"] > 0
    assert "bidi" in r.stdout
    assert doc["settings"]["target"] == "evaluate" and doc["settings"]["mode"] == "closed"
    assert doc["machine"]["cpus"] >= 1 and doc["machine"]["python"]
    assert "commit" in doc
    pre = doc["workload"]["preflight"]
    assert pre["errors"] == {} and pre["engine_mismatches"] == 0
    assert doc["workload"]["response_bytes"]["evaluate"] > 0
    assert "ratio" in r.stdout and "no previous result" in r.stdout
    assert "proctor [" in r.stderr  # the progress bar

    # the same settings again: compared with the first (the floor is not part of the key)
    second = tmp_path / "second.json"
    r = _bench(*common, "--out", str(second), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    doc2 = json.loads(second.read_text())
    assert doc2["comparison"]["previous_when"] == doc["when"]
    assert set(doc2["comparison"]["figures"]) == {"p50", "p99", "throughput"}
    assert f"compared with {out}" in r.stdout


def test_the_stream_target_with_its_bidi_echo_floor(tmp_path: Path) -> None:
    out = tmp_path / "stream.json"
    r = _bench("--spawn", "--policy", str(SEED), "--target", "stream", "--concurrency", "8",
               "--duration", "1", "--warmup", "0.2", "--procs", "1", "--floor",
               "--out", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(out.read_text())
    assert results.validate(doc) == []
    assert doc["settings"]["target"] == "stream"
    _sane(doc["figures"])
    _sane(doc["floor"]["figures"])
    assert set(doc["figures"]["by_op"]) == {"stream"}
    pre = doc["workload"]["preflight"]
    assert pre["errors"] == {} and pre["engine_mismatches"] == 0 and pre["ok"] > 0


def test_short_open_loop_mix_adds_a_budget_for_reserve(tmp_path: Path) -> None:
    out = tmp_path / "open.json"
    r = _bench("--spawn", "--policy", str(SEED), "--target", "mix", "--rate", "150",
               "--duration", "1", "--warmup", "0.2", "--procs", "1", "--batch-size", "10",
               "--out", str(out), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    doc = json.loads(out.read_text())
    assert results.validate(doc) == []
    f = doc["figures"]
    _sane(f)
    assert set(f["by_op"]) == {"evaluate", "batch", "reserve"}
    assert 120 <= f["calls"] <= 160
    assert doc["settings"]["policy_augmented_with_bench_budget"]
    assert f["send_lag_us"]["count"] == f["calls"]


def test_bad_invocations_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--duration", "1"]) == 2
    assert "--spawn" in capsys.readouterr().err
    assert main(["bench", "--spawn"]) == 2
    assert "--spawn needs --policy" in capsys.readouterr().err
    assert main(["bench", "--server", "127.0.0.1:1", "--policy", str(SEED),
                 "--target", "reserve"]) == 2
    assert "needs budgets" in capsys.readouterr().err


def test_sweep_without_matplotlib_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plot, "available", lambda: False)
    assert main(["bench", "--spawn", "--policy", str(SEED), "--sweep"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'proctor[bench]'" in err and "matplotlib" in err


def test_plots_are_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from proctor.bench import histo

    points = [{"fraction": f, "rate": 1000 * f, "throughput_per_s": 990 * f,
               "p50_us": 300 + 2000 * f ** 8, "p99_us": 900 + 9000 * f ** 8} for f in
              (0.1, 0.5, 0.9, 1.0)]
    a = plot.latency_vs_throughput(points, tmp_path / "lat.png", "t", floor=points)
    h = histo.new_histogram()
    for v in range(100, 5000, 7):
        histo.record_us(h, v)
    b = plot.latency_histogram({"run": histo.bins(h)}, tmp_path / "hist.png", "t")
    for path in (a, b):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_running_server_and_a_jsonl_workload(tmp_path: Path) -> None:
    from tests.support.proctor import start_proctor

    workload = tmp_path / "w.jsonl"
    workload.write_text("".join(
        json.dumps({"topic": f"job.{i}.export.bulk", "delegation_path": ["a", "etl"],
                    "risk_tags": ["bulk-data"], "tenant": "acme", "request_id": f"r{i}"}) + "\n"
        for i in range(20)))
    server = start_proctor(SEED, tmp_path / "serve")
    try:
        out = tmp_path / "r.json"
        r = _bench("--server", server.address, "--workload", str(workload), "--target", "batch",
                   "--batch-size", "20", "--concurrency", "2", "--duration", "0.5",
                   "--warmup", "0.1", "--out", str(out), "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr + r.stdout
        doc = json.loads(out.read_text())
        _sane(doc["figures"])
        assert doc["settings"]["server"] == server.address
        assert doc["settings"]["workload_sha"] and doc["workload"]["requests"] == 20
        assert doc["workload"]["engine_decisions"] is None  # no --policy: nothing to check against
        assert "server_cpu_share" not in doc["figures"]  # not ours to watch
    finally:
        server.stop()
