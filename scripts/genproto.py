"""Generate the Python gRPC stubs from proto/ into clients/python/src/proctor/v1.

The stubs are committed; tests/test_proto_stubs.py regenerates them into a
temporary directory and fails when the committed copy differs.
Run: python scripts/genproto.py
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
STUB_ROOT = ROOT / "clients" / "python" / "src"


def proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "proctor" / "v1").glob("*.proto"))


def generate(out_root: Path) -> None:
    """Write proctor/v1/*_pb2.py, *_pb2.pyi and *_pb2_grpc.py under out_root."""
    include = str(resources.files("grpc_tools") / "_proto")
    (out_root / "proctor" / "v1").mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_DIR)) for p in proto_files()],
    ]
    # protoc resolves the relative proto names against -I, so run from PROTO_DIR's view.
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else STUB_ROOT)
