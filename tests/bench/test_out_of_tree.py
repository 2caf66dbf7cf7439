"""Benchmarks write their results outside the checkout: a run never dirties `git status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proctor.bench import results, runner

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "safety.yaml"
PROCTOR = Path(sys.executable).parent / "proctor"


def _git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=30).stdout


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROCTOR_BENCH_RESULTS"}
    env["XDG_CACHE_HOME"] = str(cache)
    return env


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout")
def test_a_bench_run_from_the_checkout_leaves_git_status_as_it_was(tmp_path: Path) -> None:
    before = _git_status()
    cmd = [str(PROCTOR)] if PROCTOR.exists() else [sys.executable, "-m", "proctor.server"]
    r = subprocess.run([*cmd, "bench", "--spawn", "--policy", str(SEED), "--duration", "0.5",
                        "--warmup", "0.1", "--concurrency", "2", "--procs", "1",
                        "--no-progress"],
                       cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    written = list((tmp_path / "proctor" / "bench").glob("bench-evaluate-closed-c2-*.json"))
    assert len(written) == 1
    assert f"wrote {written[0]}" in r.stdout
    assert results.validate(json.loads(written[0].read_text())) == []
    assert _git_status() == before


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs a git checkout")
def test_a_script_benchmark_writes_to_the_results_directory(tmp_path: Path) -> None:
    before = _git_status()
    r = subprocess.run([sys.executable, "-m", "benchmarks.engine_bench", "--sizes", "10",
                        "--evals", "100"],
                       cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    written = list((tmp_path / "proctor" / "bench").glob("engine-*.json"))
    assert len(written) == 1 and f"wrote {written[0]}" in r.stderr
    assert _git_status() == before


def test_results_directory_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCTOR_BENCH_RESULTS", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert results.results_dir() == tmp_path / "home" / ".cache" / "proctor" / "bench"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert results.results_dir() == tmp_path / "cache" / "proctor" / "bench"
    monkeypatch.setenv("PROCTOR_BENCH_RESULTS", str(tmp_path / "mine"))
    assert results.results_dir() == tmp_path / "mine"
    path = results.save_result({"benchmark": "x"}, None, "x")
    assert path.parent == tmp_path / "mine" and json.loads(path.read_text()) == {"benchmark": "x"}
    chosen = tmp_path / "elsewhere" / "r.json"
    assert results.save_result({"benchmark": "y"}, chosen, "y") == chosen and chosen.exists()


def test_each_benchmark_has_one_committed_baseline() -> None:
    names = sorted(p.name for p in results.BASELINES.glob("*.json"))
    assert names == ["audit_bench.json", "bench-evaluate-closed-c64.json", "budget_bench.json",
                     "cost_bench.json", "engine_bench.json", "lua_bench.json", "peers.json",
                     "service_bench.json"]
    assert not (ROOT / "benchmarks" / "results").exists()
    doc = json.loads((results.BASELINES / "bench-evaluate-closed-c64.json").read_text())
    assert results.validate(doc) == []


def test_without_a_previous_run_the_baseline_is_compared(tmp_path: Path) -> None:
    doc = json.loads((results.BASELINES / "bench-evaluate-closed-c64.json").read_text())
    out = tmp_path / "runs" / "new.json"
    found = runner.find_previous(tmp_path / "runs", out, doc)
    assert found is not None and found[0] == results.BASELINES / "bench-evaluate-closed-c64.json"
    earlier = dict(doc, when="2099-01-01T00:00:00+00:00")
    results.write(earlier, tmp_path / "runs" / "earlier.json")
    found = runner.find_previous(tmp_path / "runs", out, doc)
    assert found is not None and found[0] == tmp_path / "runs" / "earlier.json"
