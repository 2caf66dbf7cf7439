"""Open-loop timing against a server of known speed: 20 ms per call, two calls at a time.

Its capacity is 2 / 20 ms = 100 calls/s. At 20 calls/s the latency is the
service time (~20 ms); at 250 calls/s the queue grows for the whole run, and
since latency runs from each call's intended send time, it shows: the later
sub-intervals are far slower than the first.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proctor.bench import floor, loop, workload
from proctor.bench.spawn import free_port
from proctor.engine import compile_policy

DELAY_MS = 20.0
POLICY = """\
version: v1
rules:
  - {id: r, match: {topics: ["job.*.send.*"], risk_tags: [external]}, decision: deny,
     reason: "x"}
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    address = f"127.0.0.1:{free_port()}"
    with floor.EchoProcess(address, 100, delay_ms=DELAY_MS, max_concurrent=2):
        yield address


@pytest.fixture(scope="module")
def plan() -> workload.Plan:
    requests = workload.generate_requests(compile_policy(POLICY), 50)
    return workload.build_plan("evaluate", requests, units=[]).with_methods(floor.FLOOR_METHODS)


def test_low_rate_shows_the_service_time(slow_server: str, plan: workload.Plan) -> None:
    r = loop.run_load(slow_server, plan, mode="open", rate=20, warmup=0.2, duration=1.5,
                      procs=2, progress=False)
    f = r.figures()
    assert f["errors"] == 0
    assert 26 <= f["calls"] <= 34  # 20/s for 1.5 s, from two processes
    lat = f["latency_us"]
    assert DELAY_MS * 1000 * 0.95 <= lat["p50"] <= DELAY_MS * 1000 * 2.0, lat
    assert lat["p50"] <= lat["p99"] <= lat["max"]


def test_rate_above_capacity_shows_queueing(slow_server: str, plan: workload.Plan) -> None:
    r = loop.run_load(slow_server, plan, mode="open", rate=250, warmup=0.0, duration=1.2,
                      procs=1, intervals=6, timeout=20, progress=False)
    f = r.figures()
    assert f["errors"] == 0
    assert f["calls"] >= 250  # every intended call was sent and timed
    # throughput is capped by the server (100/s), the rest waits
    assert f["throughput_per_s"] <= 115
    intervals = f["intervals"]
    assert intervals[-1]["p50_us"] > 4 * intervals[0]["p50_us"], intervals
    # after 1.2 s at 2.5x capacity the queue holds ~0.7 s of work
    assert f["latency_us"]["p99"] > 400_000
    # the generator itself kept to its schedule: the delay is the server's queue
    assert f["send_lag_us"]["p50"] < 20_000


def test_closed_loop_hides_the_queue(slow_server: str, plan: workload.Plan) -> None:
    r = loop.run_load(slow_server, plan, mode="closed", concurrency=2, warmup=0.1, duration=1.0,
                      procs=1, progress=False)
    f = r.figures()
    assert f["errors"] == 0
    # capped by the server's two slots (100/s); the floor only says the loop kept calling
    # (a loaded 2-core machine has measured 59/s)
    assert 30 <= f["throughput_per_s"] <= 105
    assert f["latency_us"]["p50"] < DELAY_MS * 1000 * 2
