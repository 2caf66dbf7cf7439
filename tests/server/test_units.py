"""In-process units of the service layer: ULIDs, settings validation, metrics export."""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from proctor.server import ids
from proctor.server.metrics import Metrics
from proctor.server.settings import Settings, SettingsError, add_arguments

from .conftest import SEED_POLICY


def _naive_encode(value: int) -> str:
    return "".join(ids._ALPHABET[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def test_ulid_encoding_is_crockford_base32() -> None:
    rng = random.Random(3)
    for value in [0, 1, (1 << 128) - 1, *(rng.getrandbits(128) for _ in range(100))]:
        assert ids.encode(value) == _naive_encode(value)


def test_ulids_are_unique_monotonic_and_carry_the_time() -> None:
    gen = ids.UlidGenerator()
    before = time.time_ns() // 1_000_000
    made = [gen.new() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    assert made == sorted(made)
    assert before <= ids.timestamp_ms(made[0]) <= ids.timestamp_ms(made[-1]) <= after
    # Two generators (two processes) do not collide.
    other = ids.UlidGenerator()
    assert not set(made) & {other.new() for _ in range(1000)}


def test_ulid_counting_up_across_the_cached_high_bits_encodes_exactly() -> None:
    # Within one millisecond only the low characters are re-encoded; a carry out of
    # the low 20 bits must still give exactly the ULID of (time, random).
    gen = ids.UlidGenerator()
    ms = 1_700_000_000_123
    first = gen.new(ms)
    start = (1 << 40) - 3
    gen._last_random = start  # noqa: SLF001 - drive the counter to a carry boundary
    made = [gen.new(ms) for _ in range(6)]
    expected = [ids.encode((ms << 80) | (start + 1 + i)) for i in range(6)]
    assert made == expected
    assert made == sorted(made) and first[:10] == made[0][:10]
    # The next millisecond carries into the cached high characters of the time.
    carry = ((ms >> 20) + 1) << 20
    later = gen.new(carry - 1), gen.new(carry)
    assert later[1] == ids.encode((carry << 80) | gen._last_random)  # noqa: SLF001
    assert made[-1] < later[0] < later[1]


def _settings(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Settings.from_args(parser.parse_args(["--policy", str(SEED_POLICY), *argv]))


def test_settings_defaults_cover_every_flag() -> None:
    s = _settings().validate()
    assert (s.listen, s.audit, s.audit_dir, s.audit_stream) == (
        "127.0.0.1:50051", "file", "./proctor-audit", "proctor:audit",
    )
    assert (s.audit_durability, s.audit_queue_policy, s.audit_maxlen, s.workers) == (
        "async", "block", 1_000_000, 1,
    )
    assert s.embedded_stores and not s.tls


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "2"], "needs --redis-url"),
        (["--workers", "0"], "at least 1"),
        (["--workers", "2", "--redis-url", "redis://x:1/0", "--listen", "127.0.0.1:0"],
         "fixed --listen port"),
        (["--audit", "redis"], "--audit redis needs --redis-url"),
        (["--listen", "nonsense"], "HOST:PORT"),
        (["--listen", "0.0.0.0:50051"], "loopback"),
        (["--tls-cert", "/nonexistent"], "go together"),
        (["--redis-url", "http://x"], "redis://"),
        (["--audit-queue-size", "0"], "--audit-queue-size"),
        (["--audit-hmac-key-file", "/nonexistent"], "--audit-hmac-key-file"),
    ],
)
def test_settings_refuse_bad_flags_with_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as e:
        _settings(*argv).validate()
    assert message in str(e.value)


def test_settings_accept_workers_with_redis_and_ipv6_loopback(tmp_path: Path) -> None:
    s = _settings("--workers", "3", "--redis-url", "redis://127.0.0.1:6390/0",
                  "--listen", "[::1]:7000").validate()
    assert (s.workers, s.listen_host, s.listen_port) == (3, "::1", 7000)


def test_metrics_export_counts_and_histograms() -> None:
    m = Metrics()
    for _ in range(3):
        m.decided("deny", "deny-bulk-export")
    m.observe_evaluate(30e-6)
    m.observe_evaluate(2.0)
    m.observe_batch(0.002, 7)
    m.invalid("Evaluate", "topic")
    m.policy_loaded("v1", 4)
    m.policy_loaded("v2", 5)
    m.reloaded(False, "file")
    text = generate_latest(m.registry).decode()
    assert 'proctor_decisions_total{outcome="deny",rule_id="deny-bulk-export"} 3.0' in text
    assert 'proctor_evaluate_latency_seconds_bucket{le="5e-05",method="Evaluate"} 1.0' in text
    assert 'proctor_evaluate_latency_seconds_bucket{le="+Inf",method="Evaluate"} 2.0' in text
    assert 'proctor_batch_size_bucket{le="10.0"} 1.0' in text
    assert 'proctor_policy_info{policy_version="v2"} 1.0' in text
    assert 'policy_version="v1"' not in text
    assert 'proctor_policy_reloads_total{result="failed",trigger="file"} 1.0' in text
    assert "proctor_policy_reload_failing 1.0" in text


# -- server/_ids.c, the C twin of UlidGenerator -----------------------------------------

needs_c_ids = pytest.mark.skipif(ids._ids is None, reason="proctor.server._ids not built")


class _Draws:
    """getrandbits() answering a fixed sequence: the same random starts for both twins."""

    def __init__(self, values: list[int]) -> None:
        self.values = list(values)

    def getrandbits(self, bits: int) -> int:
        assert bits == 79
        return self.values.pop(0)


def _same_ids(draws: list[int], times: list[int]) -> None:
    saved = ids._rng
    ids._rng = _Draws(draws)  # type: ignore[assignment]
    try:
        py = ids.UlidGenerator()
        c = ids._ids.Ulid(_Draws(draws).getrandbits)
        for ms in times:
            assert c.new(ms) == py.new(ms), ms
        now = time.time_ns() // 1_000_000
        assert c.new(now) == py.new(now)
    finally:
        ids._rng = saved


def test_the_ids_extension_is_built() -> None:
    if os.environ.get("PROCTOR_PURE_PYTHON") == "1":
        pytest.skip("pure Python asked for")
    assert ids._ids is not None and not isinstance(ids.new_generator(), ids.UlidGenerator)


@needs_c_ids
@settings(max_examples=200, deadline=None)
@given(st.integers(0, (1 << 79) - 1),
       st.lists(st.integers(0, (1 << 48) - 1), min_size=1, max_size=40))
def test_c_ulids_are_the_python_ones(start: int, times: list[int]) -> None:
    # Sorted and unsorted times: a clock that steps back keeps the order in both.
    _same_ids([start], times)
    _same_ids([start], sorted(times))


@needs_c_ids
@pytest.mark.parametrize("start", [(1 << 64) - 3, (1 << 20) - 2, (1 << 80) - 3, 0])
def test_c_ulids_across_the_counter_limits(start: int) -> None:
    # Carries out of the low 64 bits (the C state's word boundary), and out of all 80:
    # a fresh random start (the second draw) in the next millisecond.
    _same_ids([start, 11], [1_700_000_000_123] * 6)


@needs_c_ids
def test_c_ulid_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        ids._ids.Ulid(5)
    gen = ids._ids.Ulid(lambda bits: 1)
    with pytest.raises(TypeError):
        gen.new(1, 2)
    with pytest.raises(TypeError):
        gen.new("soon")
    failing = ids._ids.Ulid(lambda bits: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.new()
