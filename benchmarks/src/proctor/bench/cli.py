"""`proctor bench`: drive a Proctor server over gRPC and record latency (DESIGN section 9)."""

from __future__ import annotations

import argparse
from typing import Any

from .results import DEFAULT_THRESHOLD
from .workload import TARGETS

EXAMPLES = """\
examples:
  proctor bench --spawn --policy examples/safety.yaml --concurrency 64 --procs 2 --floor
  proctor bench --spawn --policy examples/safety.yaml --rate 2000 --duration 10
  proctor bench --server 127.0.0.1:50051 --policy examples/safety.yaml --target mix
  proctor bench --spawn --policy examples/safety.yaml --sweep    (pip install 'proctor[bench]')
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="load harness: drive a server over gRPC, record latency and throughput",
        description="Drive Proctor over real gRPC in a closed loop (N calls in flight) or an "
        "open loop (a fixed rate, latency from each call's intended send time), merge HDR "
        "histograms across load processes, write a JSON result outside the checkout "
        "(--out, or the results directory) and compare it with the previous result of the "
        "same settings (or the committed baseline in benchmarks/baselines).",
        epilog=EXAMPLES,
    )
    p.add_argument("--target", choices=TARGETS, default="evaluate",
                   help="Evaluate, EvaluateStream (one open stream per load channel), "
                   "EvaluateBatch, ReserveBudget, or a mix (8:1:1)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=None, metavar="N",
                      help="closed loop: N calls in flight in all (default 16)")
    load.add_argument("--rate", type=float, default=None, metavar="R",
                      help="open loop: R calls per second in all")
    p.add_argument("--procs", type=int, default=None, metavar="P",
                   help="load processes (default: half the CPUs, at least 1)")
    p.add_argument("--max-inflight", type=int, default=10000, metavar="N",
                   help="open loop: cap on calls in flight; waiting calls are still timed "
                   "from their intended send (0: no cap; default 10000)")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, metavar="S",
                   help="seconds of load before measuring (default 2)")
    where = p.add_argument_group("server")
    where.add_argument("--spawn", action="store_true",
                       help="start `proctor serve --policy P` on a free port, stop it after")
    where.add_argument("--server", default="", metavar="HOST:PORT", help="a running server")
    where.add_argument("--token-file", default=None, metavar="FILE",
                       help="--server: file holding the bearer token (default: "
                       "$PROCTOR_TOKEN, if set); sent on every call")
    where.add_argument("--policy", default="", metavar="P",
                       help="policy to serve (--spawn) and to generate the request mix from")
    where.add_argument("--serve-arg", action="append", default=[], metavar="FLAG",
                       help="extra flag for the spawned `proctor serve` (repeatable), "
                       "e.g. --serve-arg=--workers=2")
    w = p.add_argument_group("workload")
    w.add_argument("--workload", default="", metavar="FILE.jsonl",
                   help="requests, one JSON object per line with EvaluateRequest's fields "
                   "(default: a mix generated from the policy)")
    w.add_argument("--requests", type=int, default=1000, help="generated requests (default 1000)")
    w.add_argument("--seed", type=int, default=1, help="seed of the generated mix")
    w.add_argument("--batch-size", type=int, default=100, help="requests per EvaluateBatch")
    w.add_argument("--unit", default="", help="budget unit for reserve (default: the policy's)")
    w.add_argument("--reserve-ttl", type=int, default=5, help="reservation TTL seconds")
    o = p.add_argument_group("output")
    o.add_argument("--floor", action="store_true",
                   help="also run against a bare grpcio echo service with the same message "
                   "sizes and report Proctor's figures as ratios to it; a run that sends "
                   "Evaluate also runs its requests on a bidirectional stream echo")
    o.add_argument("--sweep", action="store_true",
                   help="open-loop runs at fractions of the first run's throughput; PNGs of "
                   "latency against throughput and of the latency distribution (matplotlib)")
    o.add_argument("--sweep-fractions", default="0.1,0.25,0.5,0.7,0.85,1.0,1.2")
    o.add_argument("--sweep-duration", type=float, default=0.0,
                   help="seconds per sweep point (default: min(--duration, 5))")
    o.add_argument("--out", default="", metavar="FILE.json",
                   help="result file (default: RESULTS-DIR/bench-TARGET-MODE-LOAD-TIME.json)")
    o.add_argument("--results-dir", default="",
                   help="where results and previous results live (default: "
                   "$PROCTOR_BENCH_RESULTS, else $XDG_CACHE_HOME/proctor/bench, else "
                   "~/.cache/proctor/bench)")
    o.add_argument("--regression-threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="smallest change flagged as a regression (default 0.10); the "
                   "tolerance grows with the runs' own spread")
    o.add_argument("--fail-on-regression", action="store_true", help="exit 3 on a regression")
    o.add_argument("--intervals", type=int, default=10,
                   help="sub-intervals the run's spread is measured over")
    o.add_argument("--timeout", type=float, default=10.0, help="per-call deadline, seconds")
    o.add_argument("--note", default="", help="free text stored in the result")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .runner import run as run_bench

    return run_bench(args)
