"""`_seal.seal_decisions`: the pipeline's sealing loop over a run of decision events in C.

`AuditPipeline._seal` hands it each run of decisions and seals the event a run stops
at in Python. Whatever the items, the result (lines, seq, prev hash, the exception
raised, how far the id generator moved) must be the pure Python loop's.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proctor.server import ids
from proctor.server.audit import event
from proctor.server.audit.chain import FLUSH as _FLUSH
from proctor.server.audit.event import (
    APPROVAL_FIELDS,
    DECISION_FIELDS,
    GENESIS,
    format_micros,
    quote,
)
from proctor.server.audit.pipeline import AuditPipeline
from proctor.server.audit.sink import Sealed

from .helpers import decision

try:
    from proctor.server.audit import _seal
except ImportError:
    _seal = None

PURE = os.environ.get("PROCTOR_PURE_PYTHON") == "1"
needs_c = pytest.mark.skipif(
    _seal is None or PURE or event.seal_decisions is None,
    reason="proctor.server.audit._seal is not built (or pure Python asked for)")

_LONE = "\ud800"
_STR_FIELDS = ("request_id", "run_id", "tenant", "topic", "outcome", "rule_id", "reason",
               "policy_version", "decision_id", "approval_id")
_DIGEST = hashlib.sha256(b"head").hexdigest()


class Discard:
    name = "discard"

    def resume(self, writer: str) -> tuple[int, str] | None:
        return None

    def write(self, batch: list[Sealed]) -> None:
        del batch

    def close(self) -> None:
        return None


def _generator(kind: str, seed: int) -> Any:
    """A ULID generator whose ids depend on `seed` only: the same for equal arguments."""
    saved = ids._rng
    ids._rng = random.Random(seed)
    try:
        gen = ids.UlidGenerator()
        gen.new(0)  # draws its random start now, from `seed`
    finally:
        ids._rng = saved
    return gen


_GENERATORS = ("py",)


def _pipeline(gen: Any, seq: Any, prev: str, writer: str, key: bytes | None) -> AuditPipeline:
    p = AuditPipeline(Discard(), writer=writer, hmac_key=key)
    p._ids, p._seq, p._prev = gen, seq, prev
    return p


@contextlib.contextmanager
def _python_loop(template: bool = False) -> Iterator[None]:
    """The pipeline's Python loop (the reference), over the Python template too if asked."""
    saved = event.seal_decisions, event._decision_line, event.decision_body
    event.seal_decisions = None
    if template:
        event._decision_line = None
        event.decision_body = event.decision_body_py
    try:
        yield
    finally:
        event.seal_decisions, event._decision_line, event.decision_body = saved


def _outcome(p: AuditPipeline, items: list[Any]) -> Any:
    """p._seal(items), or what it raised (type and message)."""
    try:
        return p._seal(items)
    except Exception as exc:  # compared by the caller, not swallowed
        return type(exc), str(exc)


def _same_as_python(fast: AuditPipeline, ref: AuditPipeline, items: list[Any],
                    pure: AuditPipeline | None = None) -> Any:
    """fast._seal(items) is the Python loop's (ref), and the all-Python one's (pure)."""
    got = _outcome(fast, items)
    with _python_loop():
        want = _outcome(ref, items)
    assert got == want
    if isinstance(got[0], list):
        assert all(type(s) is Sealed for s in got[0])
        assert type(got[1]) is type(want[1])
    # Both generators were asked for the same ids (none more for a declined event).
    next_id = fast._ids.new(0)
    assert next_id == ref._ids.new(0)
    if pure is not None:
        with _python_loop(template=True):
            want = _outcome(pure, items)
        # The two templates raise the same errors, not always with the same message.
        assert (got[0] if isinstance(got[0], type) else got) == (
            want[0] if isinstance(want[0], type) else want)
        assert next_id == pure._ids.new(0)
    return got


# -- items -------------------------------------------------------------------------------

_awkward = st.sampled_from('"\\\n\x00\x1f\x7fé€𝄞')
_text = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), _awkward), max_size=10)


class Float(float):
    pass


def _mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any],
            odds: int = 5) -> st.SearchStrategy[Any]:
    """`common` `odds` times in `odds` + 1 (st.one_of does not weigh its branches)."""
    return st.sampled_from((True,) * odds + (False,)).flatmap(lambda c: common if c else rare)


# Half a microsecond, exactly: when * 1e6 is m + 0.5 for most of these (see the test).
_halves = st.integers(0, 4 * 10**15).map(lambda m: (m + 0.5) / 1e6)
_boundaries = st.builds(
    lambda day, second, off: day * 86400.0 + second + off,
    st.integers(0, 30_000), st.sampled_from((0, 59, 86399)),
    st.sampled_from((0.0, 0.9999995, 0.999999, 0.9999994, 0.0000005, -0.0000005, 0.5)))
# What C leaves to the Python loop: before 1970, after 9999, not finite, not a float.
_odd_when = st.one_of(
    st.sampled_from((-1.5, -0.0000005, 253402300799.99997, 253402300800.0, 3e11, math.inf,
                     math.nan)),
    st.integers(0, 4 * 10**9),
    st.floats(1.6e9, 1.8e9).map(Float),
)
_when = _mostly(st.one_of(st.floats(0, 4e9), st.floats(1.6e9, 1.8e9), _halves, _boundaries),
               _odd_when, odds=8)


def _odd_value(name: str) -> st.SearchStrategy[Any]:
    """What the template declines (or fails on) in place of field `name`."""
    if name in _STR_FIELDS:
        return st.sampled_from((None, 1, ("a",), "x" + _LONE))
    if name == "labels":
        return st.sampled_from(({"k": 1}, [("a", "b")], {"a": "b", 1: "c"}, {"k": _LONE}))
    if name == "latency_us":
        return st.sampled_from((True, 1.5, "3", None))
    return st.sampled_from(("a", ["a", 1], ("a", None), {"a"}, ("a" + _LONE,)))


@st.composite
def _decision(draw: st.DrawFn) -> dict[str, Any]:
    f = decision(draw(st.integers(0, 99)))
    for name in draw(st.sets(st.sampled_from(_STR_FIELDS), max_size=3)):
        f[name] = draw(_text)
    if draw(st.booleans()):
        f["labels"] = draw(st.dictionaries(_text, _text, max_size=3))
        f["risk_tags"] = draw(st.lists(_text, max_size=3).map(tuple))
        f["latency_us"] = draw(st.integers())
    if draw(st.sampled_from((False, False, True))):  # what the approval gate adds
        for key in draw(st.sets(st.sampled_from(APPROVAL_FIELDS), min_size=1)):
            f[key] = draw(st.booleans() if key == "approval_retry" else _text)
        if draw(st.sampled_from((False,) * 5 + (True,))):  # of a type the template declines
            f[draw(st.sampled_from(APPROVAL_FIELDS))] = draw(st.sampled_from((1, None, "x")))
    change = draw(st.sampled_from(("none",) * 12 + ("odd", "missing", "extra", "swap")))
    name = draw(st.sampled_from(sorted(DECISION_FIELDS)))
    if change == "odd":
        f[name] = draw(_odd_value(name))
    elif change == "missing":
        del f[name]
    elif change == "extra":
        f["extra"] = "x"
    elif change == "swap":  # still 15 keys
        del f[name]
        f["extra"] = "x"
    return f


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=5)
_other = st.tuples(
    st.sampled_from(("budget", "approval", "policy_reload", "gap")),
    st.dictionaries(_text | st.sampled_from(("hash", "hmac", "seq", "kind")), _json, max_size=4),
    _when, st.none())
_decisions = st.tuples(st.just("decision"), _decision(), _when, st.none())
_flush = st.tuples(st.just(_FLUSH), st.none(), st.just(0.0), st.sampled_from((None, "fut")))
_item = _mostly(_decisions, st.one_of(
    _other, _flush,
    _decisions.map(list),  # what the Python loop reads as a decision, C does not
    st.tuples(st.just("decision"), _decision().map(MappingProxyType), _when, st.none())),
    odds=3)
_items = _mostly(st.lists(_item, min_size=8, max_size=40), st.lists(_item, max_size=8), 2)
_seq = _mostly(
    st.integers(-3, 10**9),
    st.sampled_from((2**63 - 3, 2**63 - 1, 2**63, -(2**63), 10**30, True, 2.0)), odds=8)
# Mostly a digest or the genesis; else a resumed head the template may not write as it is.
_prev = _mostly(
    st.one_of(st.just(GENESIS), st.binary().map(lambda b: hashlib.sha256(b).hexdigest())),
    st.one_of(st.sampled_from(('a"b', "x\\y", "\x00", "résumé", "x" + _LONE)), _text),
    odds=8)
_writer = _mostly(st.sampled_from(("host:1:1700000000000", "h")),
                  st.one_of(_text, st.just("w" + _LONE)), odds=8)


# -- the property ------------------------------------------------------------------------

@needs_c
@settings(max_examples=300, deadline=None)
@given(items=_items, seq=_seq, prev=_prev, writer=_writer,
       gen=st.sampled_from(_GENERATORS), seed=st.integers(0, 2**32))
def test_c_runs_seal_what_the_python_loop_seals(
    items: list[Any], seq: Any, prev: str, writer: str, gen: str, seed: int
) -> None:
    fast, ref, pure = (_pipeline(_generator(gen, seed), seq, prev, writer, None)
                       for _ in range(3))
    _same_as_python(fast, ref, items, pure)


@settings(max_examples=100, deadline=None)
@given(items=_items, seq=_seq, prev=_prev, key=st.binary(min_size=1, max_size=16),
       gen=st.sampled_from(_GENERATORS), seed=st.integers(0, 2**32))
def test_with_an_hmac_key_only_the_python_loop_runs(
    items: list[Any], seq: Any, prev: str, key: bytes, gen: str, seed: int
) -> None:
    def refused(*args: Any) -> Any:
        raise AssertionError("seal_decisions called with an HMAC key")

    fast = _pipeline(_generator(gen, seed), seq, prev, "w", key)
    ref = _pipeline(_generator(gen, seed), seq, prev, "w", key)
    saved = event.seal_decisions
    event.seal_decisions = refused if saved is not None else None
    try:
        got = _outcome(fast, items)
    finally:
        event.seal_decisions = saved
    with _python_loop():
        want = _outcome(ref, items)
    assert got == want
    assert fast._ids.new(0) == ref._ids.new(0)


# -- the edges, one by one ---------------------------------------------------------------

def _twins(seq: Any = 41, prev: str = _DIGEST, gen: str = _GENERATORS[0]) -> tuple[Any, ...]:
    """Three pipelines in the same state: for _same_as_python()."""
    return tuple(_pipeline(_generator(gen, 7), seq, prev, "w", None) for _ in range(3))


def _run(start: int, items: list[Any], seq: Any = 41, prev: str = _DIGEST,
         gen: Any = None) -> tuple[tuple[int, Any, str], list[Sealed]]:
    out: list[Sealed] = []
    gen = _generator(_GENERATORS[0], 7) if gen is None else gen
    done = _seal.seal_decisions(items, start, seq, prev, "w", '"w"', gen, Sealed, out)
    return done, out


@needs_c
def test_a_run_stops_at_what_it_cannot_seal_without_taking_it() -> None:
    good = [("decision", decision(i), 1.7e9 + i, None) for i in range(3)]
    declined = ("decision", decision(9, latency_us=True), 1.7e9, None)
    items = [good[0], good[1], ("budget", {"spent": 1}, 1.7e9, None), good[2],
             (_FLUSH, None, 0.0, None), declined, ("decision", decision(8), 1.7e9, None)]
    (taken, seq, prev), out = _run(0, items)
    assert (taken, seq, [s.seq for s in out]) == (2, 43, [42, 43])
    assert prev == event.parse_line(out[-1].line)["hash"] and type(out[0]) is Sealed
    for start in (2, 4, 5, len(items), len(items) + 3):
        gen, twin = _generator(_GENERATORS[0], 7), _generator(_GENERATORS[0], 7)
        done, out = _run(start, items, gen=gen)
        assert done == (0, 41, _DIGEST) and out == []
        assert gen.new(5) == twin.new(5)  # no id taken for what was not sealed
    assert _run(3, items)[0][0] == 1
    assert _run(6, items)[0][0] == 1
    # What the pipeline makes of the whole list: C, Python, C, Python...
    fast, ref, pure = _twins()
    batch, seq, _ = _same_as_python(fast, ref, items, pure)
    assert [s.seq for s in batch] == list(range(42, 48)) and seq == 47


@needs_c
def test_half_microseconds_round_to_even() -> None:
    halves = [(m + 0.5) / 1e6 for m in range(1_700_000_000_000_000, 1_700_000_000_000_400)]
    exact = [w for w in halves if w * 1_000_000 % 1 == 0.5]
    assert len(exact) > 20  # the test meets the halfway case, for even and odd m
    assert {round(w * 1_000_000) % 2 for w in exact} == {0}
    assert {math.floor(w * 1_000_000) % 2 for w in exact} == {0, 1}
    items = [("decision", decision(i), w, None) for i, w in enumerate(exact)]
    fast, ref, pure = _twins()
    batch, _, _ = _same_as_python(fast, ref, items, pure)
    assert [event.parse_line(s.line)["time"] for s in batch] == [
        format_micros(round(w * 1_000_000)) for w in exact]
    assert _run(0, items)[0][0] == len(items)  # all sealed in C


@needs_c
def test_times_across_second_day_year_and_range_edges() -> None:
    whens = [0.0, 0.0000004, 0.0000005, 0.9999995, 59.9999995, 86399.9999995, 86400.0,
             951782399.9999995, 951868800.0,  # into 2000-02-29 (a leap day), and out
             1.7e9, 1_704_067_199.9999995,  # into 2024
             253402300799.99997,  # the last second of year 9999
             253402300800.0, 3e11,  # year 10000 and later: the Python loop
             -0.0000004, -0.4, -86400.5]  # before 1970: the Python loop
    items = [("decision", decision(i), w, None) for i, w in enumerate(whens)]
    fast, ref, pure = _twins()
    batch, _, _ = _same_as_python(fast, ref, items, pure)
    times = [event.parse_line(s.line)["time"] for s in batch]
    assert times[:4] == ["1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:00.000000Z",
                         "1970-01-01T00:00:00.000000Z", "1970-01-01T00:00:01.000000Z"]
    assert times[5:9] == ["1970-01-02T00:00:00.000000Z", "1970-01-02T00:00:00.000000Z",
                          "2000-02-29T00:00:00.000000Z", "2000-03-01T00:00:00.000000Z"]
    assert times[11].startswith("9999-12-31T23:59:59.99") and times[12].startswith("10000-")
    assert times[13:] == [format_micros(round(w * 1_000_000)) for w in whens[13:]]
    assert _run(0, items)[0][0] == 12  # C stops at the year 10000


@needs_c
@pytest.mark.parametrize("gen", _GENERATORS)
def test_prev_hashes_and_seqs_the_c_run_leaves_to_python(gen: str) -> None:
    items = [("decision", decision(i), 1.7e9 + i, None) for i in range(4)]
    for seq, prev in [(41, "résumé"), (41, 'a"b'), (41, GENESIS), (2**63 - 3, _DIGEST),
                      (10**30, _DIGEST), (True, _DIGEST), (2.0, GENESIS)]:
        fast, ref, pure = _twins(seq, prev, gen)
        _same_as_python(fast, ref, items, pure)
    assert _run(0, items, seq=2**63 - 3)[0][:2] == (2, 2**63 - 1)  # then Python's big ints
    assert _run(0, items, prev="résumé")[0][0] == 0  # the loop checks plain() then


@needs_c
def test_template_failures_are_raised_by_the_python_loop_after_its_id() -> None:
    items = [("decision", decision(1), 1.7e9, None),
             ("decision", decision(2, reason="x" + _LONE), 1.7e9, None)]
    fast, ref, pure = _twins()
    got = _same_as_python(fast, ref, items, pure)
    assert got[0] is UnicodeEncodeError
    assert _run(0, items)[0][0] == 1


class _Ids:
    """An id generator answering `text`, or raising it when it is an exception type."""

    def __init__(self, text: Any) -> None:
        self.text = text

    def new(self, ms: int) -> Any:
        if isinstance(self.text, type):
            raise self.text("no id")
        return self.text


@needs_c
def test_an_id_generator_failure_propagates() -> None:
    items = [("decision", decision(1), 1.7e9, None)]
    with pytest.raises(ZeroDivisionError):
        _run(0, items, gen=_Ids(ZeroDivisionError))
    with pytest.raises(UnicodeEncodeError):
        _run(0, items, gen=_Ids("x" + _LONE))
    for text in ("ID", 12345):  # any id, written as the twin's f-string writes it
        (taken, _, _), out = _run(0, items, gen=_Ids(text))
        assert taken == 1 and f'"event_id":"{text}"'.encode() in out[0].line
        p = _pipeline(_Ids(text), 41, _DIGEST, "w", None)
        assert p._seal(items)[0] == out
        with _python_loop():
            assert p._seal(items)[0] == out


@needs_c
def test_bad_arguments_are_refused() -> None:
    gen = _generator(_GENERATORS[0], 7)
    args: tuple[Any, ...] = ([], 0, 1, "", "w", '"w"', gen, Sealed, [])
    with pytest.raises(TypeError):
        _seal.seal_decisions(*args[:8])
    for at, bad in [(0, ()), (8, ()), (7, dict), (7, "Sealed")]:
        with pytest.raises(TypeError):
            _seal.seal_decisions(*args[:at], bad, *args[at + 1:])
    with pytest.raises(ValueError):
        _seal.seal_decisions(args[0], -1, *args[2:])
    with pytest.raises(TypeError):
        _seal.seal_decisions(args[0], "0", *args[2:])


def test_the_c_path_serves_unless_pure_python_is_asked_for() -> None:
    if PURE or _seal is None:
        assert event.seal_decisions is None
    else:
        assert event.seal_decisions is _seal.seal_decisions
    code = "from proctor.server.audit import event; print(event.seal_decisions)"
    env = {**os.environ, "PROCTOR_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.split() == ["None"]


@needs_c
def test_no_reference_is_leaked_on_any_path() -> None:
    surrogate = "x" + _LONE
    label = "lbl"
    fields = [decision(i, labels={label: "v", "a": "b"}) for i in range(16)]
    # Past the stack buffer: the heap one is reused for the next events.
    big = ("decision", decision(99, reason="é\n" * 2000), 1.7e9, None)
    good = [("decision", f, 1.7e9 + i / 7, None) for i, f in enumerate(fields)]
    writer, writer_json, prev = "writer-1", quote("writer-1"), "cd" * 32
    ulid = _generator(_GENERATORS[0], 7)
    paths: list[tuple[list[Any], Any, str, Any]] = [
        (good, 41, prev, ulid),  # all sealed
        ([*good[:3], big, *good[3:5]], 41, prev, ulid),
        ([*good[:2], ("budget", {"a": 1}, 1.7e9, None)], 41, prev, ulid),  # stops
        ([good[0], ("decision", decision(1, latency_us=True), 1.7e9, None)], 41, prev, ulid),
        ([good[0], ("decision", decision(1, reason=surrogate), 1.7e9, None)], 41, prev, ulid),
        ([good[0], ("decision", decision(1), math.nan, None)], 41, prev, ulid),
        (good[:2], 41, 'a"b', ulid),  # nothing taken
        (good[:2], 2**63 - 2, prev, ulid),  # one taken, then the seq is too big
        (good[:2], 41, prev, _Ids(ZeroDivisionError)),  # raises
        (good[:2], 41, prev, _Ids(surrogate)),  # raises UnicodeEncodeError
        (good[:2], 41, prev, _Ids(123456)),
    ]
    for items, seq, head, gen in paths:
        def run(items: list[Any] = items, seq: Any = seq, head: str = head,
                gen: Any = gen) -> None:
            out: list[Sealed] = []
            with contextlib.suppress(ZeroDivisionError, UnicodeEncodeError):
                _seal.seal_decisions(items, 0, seq, head, writer, writer_json, gen, Sealed, out)

        for _ in range(3):  # warm: caches filled, UTF-8 of non-ASCII strs made
            run()
        watched = [writer, writer_json, head, items, gen, Sealed, label, surrogate, seq,
                   *items, *(i[1] for i in items), *fields[0].values()]
        watched = [o for o in watched if not isinstance(o, int) or abs(o) > 1000]
        before = [sys.getrefcount(o) for o in watched]
        blocks = sys.getallocatedblocks()
        for _ in range(300):
            run()
        assert sys.getallocatedblocks() - blocks < 100, (items, seq, head, gen)
        after = [sys.getrefcount(o) for o in watched]
        assert after == before, (items, seq, head, gen)
