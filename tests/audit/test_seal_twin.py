"""The decision template's twins: `_seal.decision_body` (C) and `decision_body_py`.

They must write the same bytes as each other and as the generic encoder, decline
(None) the same events and fail the same way on a str that will not encode.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections import OrderedDict
from enum import IntEnum, StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server.audit import event
from proctor.server.audit.event import (
    APPROVAL_FIELDS,
    DECISION_FIELDS,
    _with_hashes,
    canonical,
    decision_body_py,
    quote,
    seal,
)

try:
    from proctor.server.audit import _seal
except ImportError:
    _seal = None

PURE = os.environ.get("PROCTOR_PURE_PYTHON") == "1"
needs_c = pytest.mark.skipif(_seal is None, reason="proctor.server.audit._seal is not built")

_STR_FIELDS = ("request_id", "run_id", "tenant", "topic", "outcome", "rule_id", "reason",
               "policy_version", "decision_id", "approval_id")
_SEQ_FIELDS = ("delegation_path", "derived_tags", "risk_tags")
# Whatever JSON escapes, often, beside any other code point (non-BMP and DEL included).
_awkward = st.sampled_from('"\\\n\r\t\b\f\x00\x01\x1f\x7f\x80é€𝄞\u2028')
_text = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), _awkward), max_size=24)
_plain = st.text(st.sampled_from("0123456789abcdefABCDEFXYZ:.-TZ"), max_size=64)
_seqs = st.lists(_text, max_size=5).flatmap(lambda xs: st.sampled_from((tuple(xs), xs)))
_labels = st.one_of(
    st.just({}),
    st.dictionaries(_text, _text, min_size=1, max_size=1),
    st.dictionaries(_text, _text, min_size=2, max_size=20),  # past the C stack array too
)


# The keys the approval gate adds to a decision event, any subset of them.
_approval_extras = st.fixed_dictionaries({}, optional={
    "approval_error": _text, "approval_presented": _text, "approval_retry": st.booleans(),
    "approval_use": _text})


def _record(fields: dict[str, Any], event_id: str, seq: int, stamp: str, writer: str,
            prev: str) -> dict[str, Any]:
    return {**fields, "event_id": event_id, "seq": seq, "time": stamp, "kind": "decision",
            "writer": writer, "prev_hash": prev}


def _outcome(fn: Any, *args: Any) -> Any:
    """fn(*args), or the type of what it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # compared by the caller, not swallowed
        return type(exc)


def _line_py(f: Any, *envelope: Any) -> tuple[bytes, str] | None:
    body = decision_body_py(f, *envelope)
    return None if body is None else _with_hashes(body, None)


def _both(f: Any, *envelope: Any) -> tuple[Any, Any]:
    """(C result, Python result) of decision_body; an exception's type stands for it.

    Also holds the C decision_line (the body with its hash, seal_decision's key=None
    path) to what the Python tail makes of the Python body.
    """
    line = _outcome(_seal.decision_line, f, *envelope)
    assert line == _outcome(_line_py, f, *envelope)
    return (_outcome(_seal.decision_body, f, *envelope),
            _outcome(decision_body_py, f, *envelope))


def _base() -> dict[str, Any]:
    return {"request_id": "r", "run_id": "", "tenant": "acme", "topic": "job.1.x",
            "outcome": "allow", "rule_id": "a", "reason": "ok", "policy_version": "v",
            "decision_id": "d", "approval_id": "", "delegation_path": ("a", "b", "c"),
            "derived_tags": (), "risk_tags": [], "labels": {"env": "prod"},
            "latency_us": -(10**30)}


# event_id, seq, stamp, writer_json, prev: as the pipeline passes them.
_ENVELOPE = ("01JDXR7Q3M5W8ZK2V4N6P9T1BE", 10**20, "2024-11-07T10:15:42.123456Z", '"w"',
             "ab" * 32)


def test_the_extension_is_built() -> None:
    """CI compiles it; a missing compiler must not silently lose the speed."""
    if PURE:
        assert not event.SEAL_ACCELERATED
    else:
        assert _seal is not None and event.SEAL_ACCELERATED
        assert event.decision_body is _seal.decision_body


def test_pure_python_env_selects_the_python_twin() -> None:
    code = ("from proctor.server.audit import event; "
            "print(event.SEAL_ACCELERATED, event.decision_body is event.decision_body_py)")
    env = {**os.environ, "PROCTOR_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.split() == ["False", "True"]


@needs_c
@settings(max_examples=400, deadline=None)
@given(
    strings=st.fixed_dictionaries({k: _text for k in _STR_FIELDS}),
    path=_seqs, derived=_seqs, tags=_seqs, labels=_labels,
    latency=st.integers(), seq=st.integers(),
    writer=_text, prev=_plain, stamp=_plain, event_id=_plain,
    key=st.one_of(st.none(), st.binary(min_size=1, max_size=16)),
    approval=_approval_extras,
)
def test_twins_write_the_generic_bytes(
    strings: dict[str, str], path: Any, derived: Any, tags: Any, labels: dict[str, str],
    latency: int, seq: int, writer: str, prev: str, stamp: str, event_id: str,
    key: bytes | None, approval: dict[str, Any],
) -> None:
    fields = {**strings, "delegation_path": path, "derived_tags": derived, "risk_tags": tags,
              "labels": labels, "latency_us": latency}
    assert fields.keys() == DECISION_FIELDS
    fields.update(approval)  # what the approval gate may add
    envelope = (event_id, seq, stamp, quote(writer), prev)
    generic = canonical(_record(fields, event_id, seq, stamp, writer, prev))
    assert _seal.decision_body(fields, *envelope) == generic
    assert decision_body_py(fields, *envelope) == generic
    record = _record(fields, event_id, seq, stamp, writer, prev)
    assert _seal.decision_line(fields, *envelope) == seal(record, None)
    assert event.seal_decision(fields, *envelope, key) == seal(record, key)


# A value of the wrong type for each kind of field, and surrogates (which will not
# encode) for every place a str goes.
_ODD_STR = (None, 1, 1.5, b"x", ("a",), ["a"], {"a": "b"})
_ODD_SEQ = ("a", None, {"a"}, frozenset(), {"a": "b"}, ("a", 1), ["a", None], (b"x",),
            ("a", ("b",)), range(2))
_ODD_LABELS = (None, [], [("a", "b")], {"k": 1}, {1: "v"}, {"a": "b", 1: "c"},
               {"a": "b", "c": 2}, {"a": None}, OrderedDict(a="b"), MappingProxyType({}),
               {("a",): "b"})
_ODD_LATENCY = (True, False, 1.5, "3", None, 3.0)
_LONE = "\ud800"


def _odd_values(name: str) -> tuple[Any, ...]:
    if name in _STR_FIELDS:
        return (*_ODD_STR, "x" + _LONE)
    if name in _SEQ_FIELDS:
        return (*_ODD_SEQ, (_LONE,), ["ok", "a" + _LONE])
    if name == "labels":
        return (*_ODD_LABELS, {_LONE: "v"}, {"k": _LONE}, {"a": "b", "z" + _LONE: "c"})
    return _ODD_LATENCY


def _holds_lone(value: Any) -> bool:
    if isinstance(value, str):
        return _LONE in value
    if isinstance(value, dict):
        return any(_holds_lone(k) or _holds_lone(v) for k, v in value.items())
    return isinstance(value, tuple | list) and any(map(_holds_lone, value))


_MISSING = object()
_corruption = st.sampled_from(sorted(DECISION_FIELDS)).flatmap(
    lambda name: st.tuples(st.just(name), st.sampled_from((_MISSING, *_odd_values(name)))))


@needs_c
@settings(max_examples=500, deadline=None)
@given(corruptions=st.lists(_corruption, max_size=3),
       envelope_surrogate=st.sampled_from((None, 0, 2, 3, 4)))
def test_twins_decline_and_fail_alike(
    corruptions: list[tuple[str, Any]], envelope_surrogate: int | None
) -> None:
    fields = _base()
    for name, odd in corruptions:
        if odd is _MISSING:
            fields.pop(name, None)
        else:
            fields[name] = odd
    envelope = list(_ENVELOPE)
    if envelope_surrogate is not None:
        envelope[envelope_surrogate] += _LONE
    c, py = _both(fields, *envelope)
    assert c == py
    if isinstance(c, bytes):  # nothing odd survived: then it is the generic bytes
        assert c == canonical(_record(fields, *_ENVELOPE[:3], "w", _ENVELOPE[4]))


@needs_c
@pytest.mark.parametrize("name", sorted(DECISION_FIELDS))
def test_each_odd_value_and_missing_field(name: str) -> None:
    base = _base()
    assert _both(base, *_ENVELOPE)[0] == canonical(
        _record(base, *_ENVELOPE[:3], "w", _ENVELOPE[4]))
    missing = {k: v for k, v in base.items() if k != name}
    assert _both(missing, *_ENVELOPE) == (None, None)
    assert _both({**missing, "extra": "x"}, *_ENVELOPE) == (None, None)
    for odd in _odd_values(name):
        c, py = _both({**base, name: odd}, *_ENVELOPE)
        assert c == py, (name, odd)
        assert c is (UnicodeEncodeError if _holds_lone(odd) else None), (name, odd, c)


@needs_c
@pytest.mark.parametrize("name", APPROVAL_FIELDS)
def test_each_approval_key_written_or_declined_alike(name: str) -> None:
    base = _base()
    good = {"approval_error": 'store "down"', "approval_presented": "01AP",
            "approval_retry": True, "approval_use": "consumed"}[name]
    for value in ((True, False) if name == "approval_retry" else (good, "", "é\n")):
        f = {**base, name: value}
        generic = canonical(_record(f, *_ENVELOPE[:3], "w", _ENVELOPE[4]))
        assert _both(f, *_ENVELOPE) == (generic, generic), (name, value)
    odd = (1, None, "true", 1.0) if name == "approval_retry" else (*_ODD_STR, True)
    for value in odd:
        assert _both({**base, name: value}, *_ENVELOPE) == (None, None), (name, value)
    if name != "approval_retry":
        lone = {**base, name: "x" + _LONE}
        assert _both(lone, *_ENVELOPE) == (UnicodeEncodeError, UnicodeEncodeError)
        # a declined field elsewhere wins over the surrogate, as everywhere
        assert _both({**lone, "latency_us": 1.5}, *_ENVELOPE) == (None, None)
    every = {**base, "approval_error": "e", "approval_presented": "p",
             "approval_retry": False, "approval_use": "u"}
    generic = canonical(_record(every, *_ENVELOPE[:3], "w", _ENVELOPE[4]))
    assert _both(every, *_ENVELOPE) == (generic, generic)


@needs_c
@pytest.mark.parametrize("where", range(5))
def test_a_lone_surrogate_in_the_envelope_raises_in_both(where: int) -> None:
    envelope = list(_ENVELOPE)
    envelope[where] = str(envelope[where]) + _LONE
    assert _both(_base(), *envelope) == (UnicodeEncodeError, UnicodeEncodeError)
    with pytest.raises(UnicodeEncodeError):
        event.seal_decision(_base(), *envelope, None)


@needs_c
def test_a_declined_field_wins_over_a_surrogate_wherever_each_is() -> None:
    """The Python twin encodes last, after every None check: so must the C one."""
    for early, late in [("approval_id", "topic"), ("topic", "approval_id")]:
        f = {**_base(), early: "x" + _LONE, late: 5}
        assert _both(f, *_ENVELOPE) == (None, None)
    f = {**_base(), "labels": {"a": _LONE, "b": "c"}, "latency_us": True}
    assert _both(f, *_ENVELOPE) == (None, None)


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = 'de"ny'


class Backwards(str):
    """A str that sorts the other way round: sorted() and the encoder honour that."""

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other)  # type: ignore[operator]


class Unordered(str):
    def __lt__(self, other: object) -> bool:
        raise TypeError("no order")

    __gt__ = __lt__  # what `str < Unordered` asks first


class Level(IntEnum):
    ONE = 1


@needs_c
def test_str_subclasses_are_written_as_the_encoder_writes_them() -> None:
    cases: list[dict[str, Any]] = [
        {"outcome": Outcome.DENY, "reason": Outcome.ALLOW},
        {"delegation_path": (Outcome.ALLOW, "b"), "risk_tags": [Outcome.DENY]},
        {"labels": {Outcome.DENY: Outcome.ALLOW}},
        {"labels": {Outcome.DENY: "x", "a": "y", Outcome.ALLOW: "z"}},
        {"labels": {Backwards("a"): "1", Backwards("b"): "2", Backwards("c"): "3"}},
    ]
    for extra in cases:
        f = {**_base(), **extra}
        generic = canonical(_record(f, *_ENVELOPE[:3], "w", _ENVELOPE[4]))
        assert _both(f, *_ENVELOPE) == (generic, generic), extra
    # An int subclass latency is declined (json writes an IntEnum as its int, the
    # template would write its format()); seq is format()ed like the f-string does.
    assert _both({**_base(), "latency_us": Level.ONE}, *_ENVELOPE) == (None, None)
    # sorted() raising TypeError is the twin's except clause too; one label is not sorted.
    assert _both({**_base(), "labels": {Unordered("a"): "b", "c": "d"}}, *_ENVELOPE) == (
        None, None)
    assert isinstance(_both({**_base(), "labels": {Unordered("a"): "b"}}, *_ENVELOPE)[0], bytes)
    c, py = _both(_base(), _ENVELOPE[0], Level.ONE, *_ENVELOPE[2:])
    assert c == py and isinstance(c, bytes)
    c, py = _both(_base(), Formatted(), *_ENVELOPE[1:])
    assert c == py and b'"event_id":"format()"' in c


class Formatted:
    """Its f-string text is not its str()."""

    def __format__(self, spec: str) -> str:
        return "format()"

    def __str__(self) -> str:
        return "str()"


@needs_c
def test_any_mapping_is_read_as_a_subscript_reads_it() -> None:
    class Defaulting(dict):  # type: ignore[type-arg]
        def __missing__(self, key: str) -> str:
            return "filled"

    base = _base()
    want = decision_body_py(base, *_ENVELOPE)
    for f in (MappingProxyType(base), Defaulting(base), OrderedDict(base)):
        assert _both(f, *_ENVELOPE) == (want, want)
    lacking = Defaulting({k: v for k, v in base.items() if k != "topic"})
    c, py = _both(lacking, *_ENVELOPE)
    assert c == py and b'"topic":"filled"' in c
    assert _both(None, *_ENVELOPE) == (None, None)  # None["x"] is a TypeError
    for fn in (_seal.decision_body, _seal.decision_line):
        with pytest.raises(TypeError):
            fn(base, *_ENVELOPE[:4])


@needs_c
def test_big_events_and_many_labels() -> None:
    """Past the C side's stack buffer (1 KiB) and its stack array of labels (8)."""
    f = {**_base(), "reason": 'x"\\\n\x00é𝄞' * 700, "delegation_path": ["a" * 3000] * 3,
         "labels": {f"k{i:03}\x01": f"v{i}" for i in range(200, 0, -1)},
         "latency_us": -(10**200), "risk_tags": tuple("\x1f" * 50)}
    generic = canonical(_record(f, *_ENVELOPE[:3], "w", _ENVELOPE[4]))
    assert _both(f, *_ENVELOPE) == (generic, generic)
    assert len(generic) > 20_000


@needs_c
def test_no_reference_is_leaked_on_any_path() -> None:
    surrogate, label = "x" + _LONE, "lbl"
    labels = {label: "v", "a": "b", "c": "d"}
    path = ("p", "q")
    wrong = 5.5
    paths: list[tuple[Any, tuple[Any, ...]]] = [
        (_base() | {"labels": labels, "delegation_path": path}, _ENVELOPE),  # bytes
        (_base() | {"reason": surrogate, "labels": labels}, _ENVELOPE),  # UnicodeEncodeError
        (_base() | {"labels": {label: surrogate, "z": "y"}}, _ENVELOPE),
        (_base() | {"reason": surrogate, "latency_us": wrong}, _ENVELOPE),  # None
        (_base() | {"labels": {label: wrong, "a": "b"}}, _ENVELOPE),
        (_base() | {"delegation_path": (label, wrong)}, _ENVELOPE),
        ({k: v for k, v in _base().items() if k != "topic"}, _ENVELOPE),
        (_base() | {"labels": {Backwards(label): "1", Backwards("m"): surrogate}}, _ENVELOPE),
        (_base(), (*_ENVELOPE[:4], _ENVELOPE[4] + _LONE)),
        (MappingProxyType(_base()), _ENVELOPE),  # PyObject_GetItem
        (MappingProxyType({k: v for k, v in _base().items() if k != "reason"}), _ENVELOPE),
        (_base() | {"labels": {f"k{i}": "v" for i in range(12)}}, _ENVELOPE),  # malloc'd
        (_base() | {"labels": {f"k{i}": "v" for i in range(12)} | {"z": _LONE}}, _ENVELOPE),
        (_base() | {"labels": {Unordered("a"): "b", "c": "d"}}, _ENVELOPE),  # sort raises
        (_base() | {"reason": "é\n" * 2000}, _ENVELOPE),  # the buffer grows
    ]
    for f, envelope in paths:
        for _ in range(3):  # warm: caches filled, UTF-8 of non-ASCII strs made
            _both(f, *envelope)
        # Not the small ints: the list of counts itself may hold one of them.
        watched = [o for o in (surrogate, label, labels, path, wrong, *envelope, f, *f.values())
                   if not isinstance(o, int) or abs(o) > 1000]
        before = [sys.getrefcount(o) for o in watched]
        blocks = sys.getallocatedblocks()  # what is made and lost on the way (int text...)
        for _ in range(500):
            with contextlib.suppress(UnicodeEncodeError):
                _seal.decision_body(f, *envelope)
            with contextlib.suppress(UnicodeEncodeError):
                _seal.decision_line(f, *envelope)
        assert sys.getallocatedblocks() - blocks < 100, (f, envelope)
        after = [sys.getrefcount(o) for o in watched]
        assert after == before, (f, envelope)
