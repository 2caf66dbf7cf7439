"""Mutated policy and principals YAML either loads or is refused with the loader's error.

Byte flips, truncation, alias bombs, deep nesting, wrong types for a field, huge
strings and lists, invalid UTF-8: the public loaders must answer every one with a
result or their documented error (a message), never another exception or a hang.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proctor.engine import PolicyError, compile_policy, read_text_file
from proctor.server.auth import PrincipalsError, load_principals
from proctor.server.auth.principals import parse_principals

ROOT = Path(__file__).resolve().parents[2]

POLICY_SEEDS = [
    (ROOT / "examples" / "safety.yaml").read_text(encoding="utf-8"),
    "version: v1\nrules:\n  - {id: r, match: {topics: [a.b]}, decision: allow}\n",
    "version: v1\nrules:\n  - id: d\n    match: {topics: ['job.*'], risk_tags: [pii]}\n"
    "    decision: require_approval\n    reason: review\n",
]
PRINCIPALS_SEEDS = [
    (ROOT / "examples" / "principals.yaml").read_text(encoding="utf-8"),
    "principals: [{id: a, roles: [admin]}]\n",
    "principals:\n  - {id: r, roles: [reviewer], tenants: [t], groups: [g]}\n",
]

WRONG_VALUES: list[Any] = [None, 0, -1, 3.5, True, "", "x" * 50, [], [1, [2]], {}, {"k": [1]}]

FUZZ = settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def alias_bomb(levels: int = 9, fan: int = 10) -> str:
    out = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        out.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan)}]")
    return "\n".join(out) + "\n"


def deep(depth: int, flow: bool) -> str:
    if flow:
        return "[" * depth + "]" * depth
    return "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


@st.composite
def wrong_type(draw: st.DrawFn, seeds: list[str]) -> bytes:
    """A seed with one field (any depth) replaced by a value of another type."""
    doc = yaml.safe_load(draw(st.sampled_from(seeds)))
    path = draw(st.sampled_from(_paths(doc)))
    _replace(doc, path, draw(st.sampled_from(WRONG_VALUES)))
    return yaml.safe_dump(doc, sort_keys=False).encode()


@st.composite
def byte_mutation(draw: st.DrawFn, seeds: list[str]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)).encode())
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from(
                [b"\xff", b"\xc3", b"\xed\xa0\x80", b"&a ", b"*a", b"!!python/object ", b"{", b"[",
                 b"\t", b"\x00", b": ", b"- ", b"\n  ", b"%YAML 1.1\n", b"---\n", b"<<: *a\n"]))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "dup":
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 200))]
    return bytes(data)


@st.composite
def structural(draw: st.DrawFn, seeds: list[str]) -> bytes:
    """Alias bombs, deep nesting, huge strings and lists, added at the top or under a key."""
    kind = draw(st.sampled_from(["bomb", "deep", "flowdeep", "string", "list", "merge"]))
    if kind == "bomb":
        piece = alias_bomb(draw(st.integers(2, 12)), draw(st.integers(2, 12)))
    elif kind in ("deep", "flowdeep"):
        piece = "x: " * (kind == "flowdeep") + deep(draw(st.integers(50, 3000)), kind == "flowdeep")
    elif kind == "string":
        piece = f"x: \"{'y' * draw(st.integers(1000, 2_000_000))}\"\n"
    elif kind == "list":
        piece = "x: [" + ", ".join(["t.p"] * draw(st.integers(100, 100_000))) + "]\n"
    else:
        piece = "b: &b {a: 1}\nc: {<<: *b, <<: *b}\n"
    seed = draw(st.sampled_from(seeds))
    return (piece + seed if draw(st.booleans()) else seed + piece).encode()


def mutations(seeds: list[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(byte_mutation(seeds), wrong_type(seeds), structural(seeds))


def _policy_from_bytes(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.yaml"
        path.write_bytes(data)
        try:
            text = read_text_file(path)
        except PolicyError as e:
            assert str(e), "empty PolicyError"
            return
    try:
        compile_policy(text, "fuzz.yaml")
    except PolicyError as e:
        assert str(e), "empty PolicyError"


@FUZZ
@given(mutations(POLICY_SEEDS))
def test_mutated_policy_compiles_or_raises_policy_error(data: bytes) -> None:
    _policy_from_bytes(data)


@FUZZ
@given(mutations(PRINCIPALS_SEEDS))
def test_mutated_principals_load_or_raise_principals_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "principals.yaml"
        path.write_bytes(data)
        try:
            load_principals(str(path))
        except PrincipalsError as e:
            assert str(e), "empty PrincipalsError"


def test_alias_bomb_is_refused_without_growing_memory() -> None:
    bomb = alias_bomb(levels=12, fan=10)  # 10**12 strings if expanded
    compile_policy(POLICY_SEEDS[1], "warm.yaml")  # warm imports and caches first
    # Peak Python heap while loading (ru_maxrss would carry an earlier test's peak).
    tracemalloc.start()
    try:
        compile_policy("version: v1\n" + bomb, "bomb.yaml")
    except PolicyError as e:
        assert "alias" in str(e)
    else:
        raise AssertionError("the alias bomb compiled")
    try:
        parse_principals(bomb, "bomb.yaml")
    except PrincipalsError as e:
        assert str(e)
    else:
        raise AssertionError("the alias bomb loaded as principals")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20, f"loading an alias bomb peaked at {peak} bytes (bound 20 MiB)"
