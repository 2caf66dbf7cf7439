"""Where the gap between Evaluate and its echo floor is: the handler, or the process?

Starts three servers and times one call in flight against each, in alternating
rounds (the host's noise moves all three alike):

- `echo`: the bare grpc.aio echo of proctor.bench.floor, replying with bytes of the
  real answer's size;
- `proctor`: `proctor serve` on the seed policy, as shipped;
- `proctor-echo`: the same `proctor serve` process (its policy, audit writer, metrics,
  health, threads and options), with Decisions.Evaluate and EvaluateStream replaced
  by handlers that answer those same bytes without looking at the request. The
  replacement is made by a sitecustomize module in a temporary directory put on
  this server's PYTHONPATH only: nothing in the product knows about it.

If `proctor-echo` times like `echo`, everything Proctor adds over the floor is the
handler's own work (decode, decide, audit event, encode); if it times like `proctor`,
it is the process around it.

With --parts, a fourth `proctor serve` times the handler's own parts inside the server
(a sitecustomize there too) under the same one call in flight: decode, decide and its
audit event, encode and the whole handler as served, and decode and encode repeated at
once on the same input, when their code and data are back in the caches.

    python benchmarks/handler_share.py [--rounds 10] [--calls 300] [--parts] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from proctor.bench import results
from proctor.bench.floor import EchoProcess, stream_item_bytes
from proctor.bench.spawn import SpawnedServer, free_port, proctor_command, wait_port
from proctor.v1 import decisions_pb2

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "safety.yaml"
REQUEST = decisions_pb2.EvaluateRequest(
    topic="job.7.delegate.internal", delegation_path=["planner", "worker-1"],
    tenant="acme", run_id="run-1").SerializeToString()
HOOK = '''
import os
if os.environ.get("PROCTOR_BENCH_REPLY_BYTES"):
    from proctor.server import decisions as _d
    _n = int(os.environ["PROCTOR_BENCH_REPLY_BYTES"])
    _reply = b"x" * _n
    _item = _d._response_item(_reply)  # an EvaluateBatchItem holding the reply

    async def Evaluate(self, data, context):
        return _reply

    async def EvaluateStream(self, requests, context):
        async for _ in requests:
            yield _item

    _d.DecisionsService.Evaluate = Evaluate
    _d.DecisionsService.EvaluateStream = EvaluateStream
'''

# --parts: the real handler, its parts timed in the server as served ("served") and the
# same part repeated at once on the same input ("again", its code and data now in cache).
PARTS_HOOK = '''
import json, os, threading, time
if os.environ.get("PROCTOR_BENCH_PARTS_OUT"):
    from proctor.server import decisions as _d
    _clock = time.perf_counter_ns
    _times = {}

    def _timed(name, f, again):
        served = _times.setdefault(name + " served", [])
        repeat = _times.setdefault(name + " again", []) if again else None

        def g(*a):
            t0 = _clock()
            r = f(*a)
            t1 = _clock()
            served.append(t1 - t0)
            if again:
                f(*a)
                repeat.append(_clock() - t1)
            return r
        return g

    _d.decode_evaluate = _timed("decode", _d.decode_evaluate, True)
    _d.encode_response = _timed("encode", _d.encode_response, True)
    _d.DecisionsService._decide = _timed("decide and event", _d.DecisionsService._decide, False)
    _evaluate = _d.DecisionsService.Evaluate
    _whole = _times.setdefault("whole handler served", [])

    async def Evaluate(self, data, context):
        t0 = _clock()
        r = await _evaluate(self, data, context)
        _whole.append(_clock() - t0)
        return r

    _d.DecisionsService.Evaluate = Evaluate

    def _dump():
        while True:
            time.sleep(0.5)
            out = {k: sorted(v) for k, v in list(_times.items())}
            out = {k: {"n": len(v), "p50_us": v[len(v) // 2] / 1000 if v else None}
                   for k, v in out.items()}
            with open(os.environ["PROCTOR_BENCH_PARTS_OUT"] + ".tmp", "w") as fh:
                json.dump(out, fh)
            os.replace(os.environ["PROCTOR_BENCH_PARTS_OUT"] + ".tmp",
                       os.environ["PROCTOR_BENCH_PARTS_OUT"])

    threading.Thread(target=_dump, daemon=True).start()
'''


def handler_parts(work: Path, calls: int) -> dict[str, Any]:
    """Time the handler's parts inside a `proctor serve` under one call in flight."""
    out = work / "parts.json"
    proc, address = start_hooked("proctor-parts", PARTS_HOOK,
                                 {"PROCTOR_BENCH_PARTS_OUT": str(out)}, work)
    try:
        with grpc.insecure_channel(address) as ch:
            evaluate: Any = ch.unary_unary("/proctor.v1.Decisions/Evaluate")
            timed(evaluate, 200)
            out.unlink(missing_ok=True)
            client = timed(evaluate, calls)
        parts: dict[str, Any] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the hook writes every half second
            if out.exists():
                parts = json.loads(out.read_text())
                if parts.get("whole handler served", {}).get("n", 0) >= calls + 200:
                    break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"client": quantiles(client), "server_parts_p50_us": parts}


class Target:
    """One server's unary call and its open stream (one message in flight)."""

    def __init__(self, name: str, address: str, service: str) -> None:
        self.name = name
        self.channel = grpc.insecure_channel(address)
        self.unary: Any = self.channel.unary_unary(f"/{service}/Evaluate")
        self._sends: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        open_stream: Any = self.channel.stream_stream(f"/{service}/EvaluateStream")
        self._answers = open_stream(iter(self._sends.get, None))

    def stream(self, data: bytes) -> Any:
        self._sends.put(data)
        return next(self._answers)

    def close(self) -> None:
        self._sends.put(None)
        self.channel.close()


def start_hooked(name: str, hook_text: str, env_extra: dict[str, str], work: Path,
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """`proctor serve` with `hook_text` as a sitecustomize on its PYTHONPATH only."""
    hook = work / f"hook-{name}"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(hook_text)
    port = free_port()
    log = (work / f"{name}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(hook), **env_extra}
    proc = subprocess.Popen(
        [*proctor_command(), "serve", "--policy", str(SEED), "--listen", f"127.0.0.1:{port}",
         "--audit-dir", str(work / f"audit-{name}"), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    log.close()  # the child holds its own copy
    wait_port(port)
    return proc, f"127.0.0.1:{port}"


def timed(call: Callable[[bytes], Any], n: int) -> list[int]:
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        t0 = clock()
        call(REQUEST)
        out.append(clock() - t0)
    return out


def quantiles(samples: list[int]) -> dict[str, float]:
    s = sorted(samples)
    return {f"p{q}_us": round(s[min(len(s) - 1, len(s) * q // 100)] / 1000, 1)
            for q in (50, 90, 99)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--calls", type=int, default=300, help="calls per target per round")
    p.add_argument("--parts", action="store_true",
                   help="also time the handler's parts in the server, as served and repeated")
    p.add_argument("--out", default="")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="proctor-handler-share-"))
    server = SpawnedServer(SEED, workdir=work).start()
    targets: list[Target] = []
    try:
        with grpc.insecure_channel(server.address) as ch:
            evaluate: Any = ch.unary_unary("/proctor.v1.Decisions/Evaluate")
            reply = len(evaluate(REQUEST))
        twin, twin_address = start_hooked("proctor-echo", HOOK,
                                          {"PROCTOR_BENCH_REPLY_BYTES": str(reply)}, work)
        echo_address = f"127.0.0.1:{free_port()}"
        with EchoProcess(echo_address, reply, {"Evaluate": reply,
                                               "EvaluateStream": stream_item_bytes(reply)}):
            targets = [Target("echo", echo_address, "bench.Echo"),
                       Target("proctor", server.address, "proctor.v1.Decisions"),
                       Target("proctor-echo", twin_address, "proctor.v1.Decisions")]
            samples: dict[str, list[int]] = {f"{t.name} {k}": [] for t in targets
                                             for k in ("unary", "stream")}
            for t in targets:  # warm-up: connections, first-call paths
                timed(t.unary, 200)
                timed(t.stream, 200)
            for _ in range(args.rounds):
                for t in targets:
                    samples[f"{t.name} unary"] += timed(t.unary, args.calls)
                    samples[f"{t.name} stream"] += timed(t.stream, args.calls)
            for t in targets:
                t.close()
        twin.terminate()
        twin.wait(30)
        parts = handler_parts(work, args.rounds * args.calls) if args.parts else None
    finally:
        server.stop()
    doc: dict[str, Any] = {
        "benchmark": "handler_share", "when": results.now().isoformat(timespec="seconds"),
        "machine": results.machine(), "commit": results.git_commit(),
        "settings": {"rounds": args.rounds, "calls": args.calls, "reply_bytes": reply},
        "one_in_flight": {k: quantiles(v) for k, v in samples.items()},
    }
    q = doc["one_in_flight"]
    doc["ratios_p50"] = {
        f"{name} {kind} / echo {kind}": round(q[f"{name} {kind}"]["p50_us"]
                                              / q[f"echo {kind}"]["p50_us"], 3)
        for name in ("proctor", "proctor-echo") for kind in ("unary", "stream")}
    if parts is not None:
        doc["handler_parts"] = parts
    out = results.save_result(doc, args.out or None, "handler_share")
    for k, v in q.items():
        print(f"  {k:22s} p50 {v['p50_us']:7.1f}  p90 {v['p90_us']:7.1f}  "
              f"p99 {v['p99_us']:7.1f} us")
    for k, v in doc["ratios_p50"].items():
        print(f"  {k:40s} {v}x")
    if parts is not None:
        print("  the handler's parts in the server, p50 us:")
        for k, v in sorted(parts["server_parts_p50_us"].items()):
            print(f"    {k:28s} {v['p50_us']:7.1f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
