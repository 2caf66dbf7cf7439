"""A bare grpc.aio echo service: the floor Proctor's Evaluate is measured against.

It answers one unary method, /bench.Echo/Echo, on raw bytes: no protobuf
parsing, no work, a preset reply of exactly --response-bytes bytes (the size of
a real EvaluateResponse). Same grpc.aio server, same options as `proctor serve`.

    python benchmarks/echo_server.py --listen 127.0.0.1:50061 --response-bytes 160
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import grpc

METHOD = "/bench.Echo/Echo"
MAX_MESSAGE_BYTES = 1 << 20


async def serve(listen: str, response_bytes: int) -> None:
    reply = b"x" * response_bytes

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return reply

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(listen)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50061")
    parser.add_argument("--response-bytes", type=int, default=160)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.response_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
