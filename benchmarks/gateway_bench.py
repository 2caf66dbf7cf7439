"""Gateway benchmark: what Proctor's gateways add to a request.

    python benchmarks/gateway_bench.py [--checks 3000] [--calls 300] [--out FILE.json]

Starts `proctor serve` on a free loopback port with a small policy, then:

1. Envoy ext_authz: sequential `Authorization/Check` calls beside sequential
   `Decisions/Evaluate` calls of the same decision (allow), alternating in
   blocks of 100 so drift on a shared machine hits both alike. Check builds the
   request from headers and a path, then takes Evaluate's own decide-and-record
   path: the difference is that mapping and the Envoy messages.
2. MCP: sequential `tools/call` of an allowed tool (examples/mcp/server.py),
   through `proctor mcp-gateway` and straight to the same server, both over stdio
   with the MCP SDK's ClientSession. The difference is the gateway: one more
   stdio hop, one Evaluate.

Prints p50/p90/p99 in microseconds and writes them (with the machine and the
commit) as JSON to --out, or to gateway-<time>.json in the results directory outside
the checkout (benchmarks/baselines/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from mcp import ClientSession, StdioServerParameters, stdio_client

from proctor.bench.results import save_result
from proctor.v1 import decisions_pb2, decisions_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mcp"
POLICY = """\
version: v1
rules:
  - id: allow-reads
    match: {topics: ["http.GET.**", "mcp.notes.search_notes"]}
    decision: allow
"""


def percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50_us": round(q[49], 1), "p90_us": round(q[89], 1), "p99_us": round(q[98], 1),
            "n": len(samples)}


def bench_check(address: str, n: int) -> dict[str, Any]:
    check = external_auth_pb2.CheckRequest()
    http = check.attributes.request.http
    http.method, http.path = "GET", "/v1/items/42"
    http.headers.update({"x-proctor-delegation-path": "planner,fetcher",
                         "x-proctor-tenant": "acme", "x-proctor-label-env": "dev"})
    evaluate = decisions_pb2.EvaluateRequest(
        topic="http.GET.v1.items.42", delegation_path=["planner", "fetcher"], tenant="acme",
        labels={"env": "dev"})
    out: dict[str, list[float]] = {"check": [], "evaluate": []}
    with grpc.insecure_channel(address) as ch:
        calls = {"check": (external_auth_pb2_grpc.AuthorizationStub(ch).Check, check),
                 "evaluate": (decisions_pb2_grpc.DecisionsStub(ch).Evaluate, evaluate)}
        for method, req in calls.values():  # warm up
            for _ in range(200):
                method(req, timeout=5)
        for block in range(n // 100):
            for name in (("check", "evaluate") if block % 2 else ("evaluate", "check")):
                method, req = calls[name]
                for _ in range(100):
                    t = time.perf_counter_ns()
                    method(req, timeout=5)
                    out[name].append((time.perf_counter_ns() - t) / 1000)
    return {name: percentiles(samples) for name, samples in out.items()}


async def _tool_calls(params: StdioServerParameters, n: int) -> list[float]:
    samples = []
    async with stdio_client(params, errlog=open(os.devnull, "w")) as (r, w), \
            ClientSession(r, w) as session:
        await session.initialize()
        for i in range(n + 20):
            t = time.perf_counter_ns()
            result = await session.call_tool("search_notes", {"query": "vendor"})
            if i >= 20:  # warm-up calls left out
                samples.append((time.perf_counter_ns() - t) / 1000)
            assert not result.is_error
    return samples


def bench_mcp(address: str, n: int) -> dict[str, Any]:
    upstream = [sys.executable, str(EXAMPLE / "server.py")]
    direct = StdioServerParameters(command=upstream[0], args=upstream[1:])
    proctor = str(Path(sys.executable).parent / "proctor")
    gated = StdioServerParameters(command=proctor, args=[
        "mcp-gateway", "--server", address, "--name", "notes", "--agent", "bench",
        "--", *upstream])
    return {"direct": percentiles(anyio.run(_tool_calls, direct, n)),
            "gateway": percentiles(anyio.run(_tool_calls, gated, n))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.support.proctor import start_proctor

    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        server = start_proctor(policy, Path(tmp) / "proctor")
        try:
            result = {
                "benchmark": "gateway",
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                            "platform": platform.platform()},
                "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                         capture_output=True, text=True).stdout.strip(),
                "ext_authz": bench_check(server.address, args.checks),
                "mcp_tool_call": bench_mcp(server.address, args.calls),
            }
        finally:
            server.stop()
    out = save_result(result, args.out, "gateway")
    print(json.dumps({k: result[k] for k in ("ext_authz", "mcp_tool_call")}, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
