"""A bare grpc.aio echo service: the floor Proctor's Evaluate is measured against.

It answers one unary method, /bench.Echo/Echo, on raw bytes: no protobuf
parsing, no work, a preset reply of exactly --response-bytes bytes (the size of
a real EvaluateResponse). Same grpc.aio server, same options as `proctor serve`.
The servicer lives in server/bench/floor.py, shared with `proctor bench --floor`
(which also answers /bench.Echo/NAME with per-method reply sizes).

    python benchmarks/echo_server.py --listen 127.0.0.1:50061 --response-bytes 160
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proctor.bench.floor import MAX_MESSAGE_BYTES, METHOD, serve  # noqa: E402

__all__ = ["MAX_MESSAGE_BYTES", "METHOD", "main", "serve"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50061")
    parser.add_argument("--response-bytes", type=int, default=160)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.response_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
