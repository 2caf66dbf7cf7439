"""Every proto declares the options other languages need to generate stubs with no edits.

One Go package, one Java package (one class per message) and one C# namespace for the
whole of proctor.v1: a new .proto without them, or with different values, would split
the API across packages in those languages.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

PROTO_DIR = Path(__file__).resolve().parent.parent / "proto" / "proctor" / "v1"
PROTOS = sorted(p.stem for p in PROTO_DIR.glob("*.proto"))


@pytest.mark.parametrize("name", PROTOS)
def test_language_options_set(name: str) -> None:
    module = importlib.import_module(f"proctor.v1.{name}_pb2")
    options = module.DESCRIPTOR.GetOptions()
    assert options.go_package == "proctor.dev/api/proctor/v1;proctorv1"
    assert options.java_package == "dev.proctor.api.v1"
    assert options.java_multiple_files
    assert options.java_outer_classname == name.capitalize() + "Proto"
    assert options.csharp_namespace == "Proctor.V1"
