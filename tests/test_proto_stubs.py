"""The committed gRPC stubs must be exactly what scripts/genproto.py makes from proto/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "clients" / "python" / "src" / "proctor" / "v1"


def _genproto():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("genproto", ROOT / "scripts" / "genproto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    _genproto().generate(tmp_path)
    fresh_dir = tmp_path / "proctor" / "v1"
    fresh = {p.name: p.read_bytes() for p in fresh_dir.iterdir() if p.is_file()}
    committed = {
        p.name: p.read_bytes()
        for p in COMMITTED.iterdir()
        if p.is_file() and p.name not in ("__init__.py", "py.typed")
    }
    assert fresh, "genproto produced nothing"
    missing = sorted(set(fresh) - set(committed))
    extra = sorted(set(committed) - set(fresh))
    stale = sorted(name for name in fresh if name in committed and fresh[name] != committed[name])
    hint = "run: python scripts/genproto.py"
    assert not missing, f"stubs missing from clients/python/src/proctor/v1: {missing}; {hint}"
    assert not extra, f"stubs with no proto: {extra}; {hint}"
    assert not stale, f"stale stubs: {stale}; {hint}"
