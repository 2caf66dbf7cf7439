"""The floor: a bare grpc.aio echo service that Proctor's figures are divided by.

Any method under `bench.Echo` (`/bench.Echo/Echo`, `/bench.Echo/Evaluate`,
...; a name ending in Stream is a bidirectional stream answering each message)
takes raw bytes (no protobuf parsing, no work) and answers a preset reply
of a configured size: the size of the real response to that call, so the wire
cost matches Proctor's and the difference is the server's work. Same grpc.aio
server and options as `proctor serve`.

For the harness's own tests it can also sleep a fixed time per call and admit
only so many calls at once (a server of known capacity).

    python -m server.bench.floor --listen 127.0.0.1:50061 --response-bytes 160 \
        [--reply Evaluate=160 --reply ReserveBudget=240] [--delay-ms 20 --max-concurrent 2]

It prints `ready` on stdout once it serves, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"
MAX_MESSAGE_BYTES = 1 << 20
FLOOR_METHODS = {
    "evaluate": f"/{SERVICE}/Evaluate",
    "stream": f"/{SERVICE}/EvaluateStream",
    "batch": f"/{SERVICE}/EvaluateBatch",
    "reserve": f"/{SERVICE}/ReserveBudget",
}


def stream_item_bytes(response_bytes: int) -> int:
    """The size of the EvaluateBatchItem that EvaluateStream answers where Evaluate answers
    `response_bytes`: the response as field 1, so a tag, its length (a varint), itself."""
    n, length = response_bytes, 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return 1 + length + response_bytes


class EchoHandler(grpc.GenericRpcHandler):
    """Answers every /bench.Echo/NAME with the reply configured for NAME (or the default)."""

    def __init__(self, replies: dict[str, int], default_bytes: int, delay_ms: float = 0.0,
                 max_concurrent: int = 0) -> None:
        self.replies = {name: b"x" * size for name, size in replies.items()}
        self.default = b"x" * default_bytes
        self.delay = delay_ms / 1000.0
        self.limit = asyncio.Semaphore(max_concurrent) if max_concurrent > 0 else None
        self.handlers: dict[str, Any] = {}

    def _handler(self, reply: bytes) -> Any:
        delay, limit = self.delay, self.limit

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if limit is not None:
                async with limit:
                    if delay:
                        await asyncio.sleep(delay)
                    return reply
            if delay:
                await asyncio.sleep(delay)
            return reply

        return grpc.unary_unary_rpc_method_handler(echo)

    def _stream_handler(self, reply: bytes) -> Any:
        async def echo(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async for _ in requests:
                yield reply

        return grpc.stream_stream_rpc_method_handler(echo)

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        if service != SERVICE:
            return None
        if method not in self.handlers:
            reply = self.replies.get(name, self.default)
            # A bidirectional stream answers each message with one reply, in order.
            self.handlers[method] = (self._stream_handler(reply) if name.endswith("Stream")
                                     else self._handler(reply))
        return self.handlers[method]


async def serve(listen: str, response_bytes: int, replies: dict[str, int] | None = None,
                delay_ms: float = 0.0, max_concurrent: int = 0) -> None:
    """Serve until SIGTERM/SIGINT; print `ready` once listening."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers(
        (EchoHandler(replies or {}, response_bytes, delay_ms, max_concurrent),)
    )
    server.add_insecure_port(listen)
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def parse_reply(value: str) -> tuple[str, int]:
    name, sep, size = value.partition("=")
    if not sep or not name or not size.isdigit():
        raise argparse.ArgumentTypeError(f"--reply wants NAME=BYTES, got {value!r}")
    return name, int(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A bare grpc.aio echo service (the floor).")
    parser.add_argument("--listen", default="127.0.0.1:50061")
    parser.add_argument("--response-bytes", type=int, default=160,
                        help="reply size for /bench.Echo/Echo and any method without --reply")
    parser.add_argument("--reply", type=parse_reply, action="append", default=[],
                        metavar="NAME=BYTES", help="reply size for /bench.Echo/NAME")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="sleep per call (tests)")
    parser.add_argument("--max-concurrent", type=int, default=0,
                        help="calls served at once, the rest queue (0: no limit)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen, args.response_bytes, dict(args.reply), args.delay_ms,
                      args.max_concurrent))
    return 0


class EchoProcess:
    """The echo service as a subprocess (so it does not share a GIL with the harness)."""

    def __init__(self, address: str, response_bytes: int, replies: dict[str, int] | None = None,
                 delay_ms: float = 0.0, max_concurrent: int = 0) -> None:
        self.address = address
        cmd = [sys.executable, "-m", "proctor.bench.floor", "--listen", address,
               "--response-bytes", str(response_bytes), "--delay-ms", str(delay_ms),
               "--max-concurrent", str(max_concurrent)]
        for name, size in (replies or {}).items():
            cmd += ["--reply", f"{name}={size}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_ready(self, timeout: float = 30.0) -> EchoProcess:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as ch:
            call = ch.unary_unary(METHOD)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    stream = self.proc.stderr
                    err = stream.read().decode(errors="replace") if stream else ""
                    raise RuntimeError(f"echo service exited with {self.proc.returncode}: {err}")
                try:
                    call(b"", timeout=1)
                    return self
                except grpc.RpcError:
                    time.sleep(0.05)
        raise TimeoutError(f"echo service on {self.address} not answering")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> EchoProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
