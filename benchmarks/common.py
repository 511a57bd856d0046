"""What every benchmark shares: the no-op package, the same-run transport floors, statistics.

A floor is the bare transport doing the same job with none of our code: an echo
server in another process (this module run as `python benchmarks/common.py
--serve-echo ADDRESS`) answering a unary call or a long-lived bidirectional stream.
Every benchmark measures its floors in the same run as its figures and prints both,
with their ratio, because this machine's speed drifts from run to run.
"""

from __future__ import annotations

import asyncio
import io
import json
import queue
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD = b'{"k": "' + b"x" * 180 + b'"}'  # a ~200-byte context, as in ../shared/measurements.md
NOOP_MODULE = b"import cloaca\n\n@cloaca.task(id='noop')\ndef noop(context):\n    return None\n"
MESSAGE_LIMIT = 256 * 1024 * 1024
_OPTIONS = [("grpc.max_receive_message_length", MESSAGE_LIMIT), ("grpc.max_send_message_length", MESSAGE_LIMIT)]


def noop_archive(name: str = "noop") -> bytes:
    from supervisor.fingerprint import tree_fingerprint

    module = name.replace("-", "_")
    files = {f"{module}/__init__.py": NOOP_MODULE}
    with tempfile.TemporaryDirectory() as scratch:
        for path, data in files.items():
            (Path(scratch) / path).parent.mkdir(parents=True, exist_ok=True)
            (Path(scratch) / path).write_bytes(data)
        fingerprint = tree_fingerprint(Path(scratch))
    manifest = {
        "format_version": "2",
        "package": {"name": name, "version": "1.0.0", "fingerprint": fingerprint},
        "language": "python", "python": {"requires_python": ">=3.10", "entry_module": module},
        "tasks": [{"id": "noop", "function": f"{module}:noop", "dependencies": []}],
        "created_at": "2026-01-01T00:00:00Z",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for path, data in (("manifest.json", json.dumps(manifest).encode()), *files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload_noops(address: str, scratch: Path, count: int) -> None:
    """Upload `count` no-op packages, noop-0 ... noop-{count-1}, through the public API."""
    from supervisor.client import SupervisorClient

    with SupervisorClient(address) as client:
        for index in range(count):
            path = scratch / f"noop-{index}.cloacina"
            path.write_bytes(noop_archive(f"noop-{index}"))
            client.upload(path)


class Summary:
    def __init__(self, samples: list[float]) -> None:
        ordered = sorted(samples)
        self.median = statistics.median(ordered)
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]

    def us(self) -> str:
        return f"median {self.median * 1e6:7.0f} us   p99 {self.p99 * 1e6:7.0f} us"

    def ms(self) -> str:
        return f"median {self.median * 1e3:7.1f} ms   p99 {self.p99 * 1e3:7.1f} ms"


def timed(function: Callable[[], object], runs: int, warmup: int = 0) -> list[float]:
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return samples


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the echo server: the floor's other end ---------------------------------------------

def serve_echo(address: str) -> None:
    async def main() -> None:
        async def echo(request: bytes, context: object) -> bytes:
            return request

        async def chat(requests, context):
            async for message in requests:
                yield message

        handler = grpc.method_handlers_generic_handler("bench.Echo", {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Chat": grpc.stream_stream_rpc_method_handler(chat)})
        server = grpc.aio.server(options=_OPTIONS)
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(address)
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


@contextmanager
def echo_server(address: str) -> Iterator[str]:
    process = subprocess.Popen([sys.executable, __file__, "--serve-echo", address], stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        process.stdout.readline()
        yield address
    finally:
        process.kill()
        process.wait()


def unary_floor(address: str, payload: bytes, runs: int) -> list[float]:
    """A sync client's unary echo of `payload`."""
    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        echo = channel.unary_unary("/bench.Echo/Echo")
        return timed(lambda: echo(payload), runs, warmup=max(3, runs // 10))


def stream_floor(address: str, payload: bytes, runs: int) -> list[float]:
    """A sync client's round trips on one long-lived bidi stream (the shape of the sandbox link)."""
    with grpc.insecure_channel(address, options=_OPTIONS) as channel:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        waiting: queue.SimpleQueue = queue.SimpleQueue()
        responses = channel.stream_stream("/bench.Echo/Chat")(iter(requests.get, None))

        def read() -> None:
            try:
                for response in responses:
                    waiting.get().set_result(response)
            except grpc.RpcError:
                pass

        threading.Thread(target=read, daemon=True).start()

        def round_trip() -> None:
            future: Future = Future()
            waiting.put(future)
            requests.put(payload)
            future.result()

        samples = timed(round_trip, runs, warmup=max(3, runs // 10))
        requests.put(None)
        return samples


def interpreter_start(args: list[str], runs: int) -> list[float]:
    return timed(lambda: subprocess.run([sys.executable, *args], check=True), runs)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-echo"]:
        serve_echo(sys.argv[2])
    else:
        raise SystemExit("usage: python benchmarks/common.py --serve-echo ADDRESS")

