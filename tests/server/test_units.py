"""In-process units of the service layer: ULIDs, settings validation, metrics export."""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from proctor.server import ids
from proctor.server.metrics import Metrics
from proctor.server.settings import Settings, SettingsError, add_arguments
from tests.support.ulid import timestamp_ms

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
    assert before <= timestamp_ms(made[0]) <= timestamp_ms(made[-1]) <= after
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
        (["--metrics-listen", "0.0.0.0:9100"], "--metrics-allow-remote"),
        (["--metrics-listen", "192.0.2.7:9100"], "loopback only"),
        (["--max-batch-items", "0"], "--max-batch-items"),
        (["--max-explain-bytes", "0"], "--max-explain-bytes"),
    ],
)
def test_settings_refuse_bad_flags_with_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as e:
        _settings(*argv).validate()
    assert message in str(e.value)


def test_metrics_off_loopback_only_when_allowed() -> None:
    s = _settings("--metrics-listen", "0.0.0.0:9100", "--metrics-allow-remote").validate()
    assert s.metrics_allow_remote
    assert _settings("--metrics-listen", "[::1]:9100").validate().metrics_listen == "[::1]:9100"


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
