"""The distributions install like a library: one `proctor` namespace, ranges, a slim client.

Builds the wheels of the four distributions from this checkout, reads their metadata,
and installs proctor-client alone into a fresh virtualenv, as an agent would.
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {
    "proctor": ROOT,
    "proctor_client": ROOT / "clients" / "python",
    "proctor_engine": ROOT / "engine",
    "proctor_bench": ROOT / "benchmarks",
}
SERVER_ONLY = ("redis", "prometheus-client", "grpcio-tools", "grpcio-health-checking",
               "proctor", "proctor-engine", "hdrhistogram")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), *[str(p) for p in DISTRIBUTIONS.values()]],
        check=True, capture_output=True,
    )
    found = {}
    for name in DISTRIBUTIONS:
        matches = list(out.glob(f"{name}-*.whl"))
        assert len(matches) == 1, f"{name}: {sorted(p.name for p in out.iterdir())}"
        found[name] = matches[0]
    return found


def _metadata(wheel: Path) -> tuple[list[str], list[str]]:
    """(Requires-Dist lines, top-level names of the files in the wheel)."""
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(meta_name).decode())
        tops = {n.split("/", 1)[0] for n in z.namelist() if not n.split("/", 1)[0].endswith(
            (".dist-info", ".data"))}
    return meta.get_all("Requires-Dist") or [], sorted(tops)


def test_every_wheel_installs_only_under_the_proctor_namespace(wheels: dict[str, Path]) -> None:
    for name, wheel in wheels.items():
        _, tops = _metadata(wheel)
        assert tops == ["proctor"], f"{name} installs top-level {tops}"
        with zipfile.ZipFile(wheel) as z:
            # A namespace package: no distribution may own proctor/__init__.py.
            assert "proctor/__init__.py" not in z.namelist(), name


def test_no_requirement_is_pinned_exactly(wheels: dict[str, Path]) -> None:
    for name, wheel in wheels.items():
        requires, _ = _metadata(wheel)
        pinned = [r for r in requires
                  if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
        assert not pinned, f"{name} pins {pinned}"


def test_the_client_declares_nothing_of_the_server(wheels: dict[str, Path]) -> None:
    requires, _ = _metadata(wheels["proctor_client"])
    parsed = [Requirement(r) for r in requires]
    base = {r.name for r in parsed if r.marker is None}
    assert base == {"grpcio", "protobuf"}, requires
    local = {r.name for r in parsed if r.marker and r.marker.evaluate({"extra": "local"})}
    assert "proctor-engine" in local, requires


def test_the_client_alone_in_a_fresh_virtualenv(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    env_dir = tmp_path / "agent-env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         str(wheels["proctor_client"])],
        check=True, capture_output=True,
    )
    probe = (
        "import importlib.util, json\n"
        "import proctor.client, proctor.v1.decisions_pb2\n"
        "from proctor.client import ProctorClient\n"
        "mods = ['redis', 'prometheus_client', 'grpc_tools', 'proctor.server',\n"
        "        'proctor.engine', 'engine', 'server', 'proctor_client', 'hdrh']\n"
        "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in mods}))\n"
    )
    # From outside the checkout, whose folders are not what was installed.
    done = subprocess.run([str(python), "-I", "-c", probe], check=True, capture_output=True,
                          text=True, cwd=tmp_path)
    present = {m for m, there in __import__("json").loads(done.stdout).items() if there}
    assert not present, f"installed beside proctor-client alone: {sorted(present)}"
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        check=True, capture_output=True, text=True,
    ).stdout.lower()
    for dist in SERVER_ONLY:
        assert f"\n{dist}==" not in f"\n{listed}", f"{dist} installed with proctor-client"


def test_no_top_level_engine_or_server_in_this_environment(tmp_path: Path) -> None:
    # Run outside the checkout: its folders (engine/, server/) are not what is installed.
    probe = (
        "import importlib.util\n"
        "for name in ('engine', 'server', 'proctor_client', 'bench'):\n"
        "    spec = importlib.util.find_spec(name)\n"
        "    print(name, spec.origin if spec else None)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    assert all(line.endswith(" None") for line in out.splitlines()), out
