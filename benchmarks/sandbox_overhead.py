"""What a sandbox costs: a no-op task call, and load() to a ready sandbox.

Each figure is printed beside a baseline measured in the same run:
- call: the transport floor, a sync client echoing on one long-lived gRPC
  bidi stream to a grpc.aio server over a Unix socket (the same shape as
  the supervisor <-> sandbox channel, without any of our code);
- load: a bare isolated interpreter start (`python -I -S -c pass`) and one
  that imports grpc, the floor for any process that speaks gRPC.

Run: python benchmarks/sandbox_overhead.py [--calls N] [--loads N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import queue
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.config import SupervisorConfig  # noqa: E402
from supervisor.fingerprint import tree_fingerprint  # noqa: E402
from supervisor.facade import Supervisor  # noqa: E402

PAYLOAD = b'{"k": "' + b"x" * 180 + b'"}'
NOOP_MODULE = b"import cloaca\n\n@cloaca.task(id='noop')\ndef noop(context):\n    return None\n"


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def noop_archive() -> bytes:
    files = {"noop/__init__.py": NOOP_MODULE}
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in files.items():
            (Path(scratch) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(scratch) / name).write_bytes(data)
        fingerprint = tree_fingerprint(Path(scratch))
    manifest = {
        "format_version": "2",
        "package": {"name": "noop", "version": "1.0.0", "fingerprint": fingerprint},
        "language": "python", "python": {"requires_python": ">=3.10", "entry_module": "noop"},
        "tasks": [{"id": "noop", "function": "noop:noop", "dependencies": []}],
        "created_at": "2026-01-01T00:00:00Z",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for name, data in (("manifest.json", json.dumps(manifest).encode()), *files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


# --- baseline: a bare bidi stream ----------------------------------------------------

def serve_echo(address: str) -> None:
    async def main() -> None:
        async def chat(requests, context):
            async for message in requests:
                yield message
        handler = grpc.method_handlers_generic_handler("bench.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(address)
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()
    asyncio.run(main())


def stream_floor(calls: int) -> list[float]:
    address = f"unix:{tempfile.mkdtemp()}/echo.sock"
    server = subprocess.Popen([sys.executable, __file__, "--serve-echo", address], stdout=subprocess.PIPE)
    try:
        server.stdout.readline()
        channel = grpc.insecure_channel(address)
        requests: queue.SimpleQueue = queue.SimpleQueue()
        waiting: queue.SimpleQueue = queue.SimpleQueue()
        responses = channel.stream_stream("/bench.Echo/Chat")(iter(requests.get, None))

        def read() -> None:
            try:
                for response in responses:
                    waiting.get().set_result(response)
            except grpc.RpcError:
                pass  # the channel closed at the end of the run
        threading.Thread(target=read, daemon=True).start()
        samples = []
        for index in range(calls + calls // 10):
            future: Future = Future()
            started = time.perf_counter()
            waiting.put(future)
            requests.put(PAYLOAD)
            future.result()
            if index >= calls // 10:  # warm-up excluded
                samples.append(time.perf_counter() - started)
        requests.put(None)
        channel.close()
        return samples
    finally:
        server.kill()
        server.wait()


def interpreter_start(args: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--serve-echo")
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return

    archive = noop_archive()
    floor = stream_floor(args.calls)
    with Supervisor(SupervisorConfig(memory_limit_mib=None)) as supervisor:
        loads = []
        for _ in range(args.loads):
            started = time.perf_counter()
            supervisor.load(archive)  # replaces the previous one: a fresh sandbox each time
            loads.append(time.perf_counter() - started)
        for _ in range(args.calls // 10):
            supervisor.call("noop", "noop", PAYLOAD)
        calls = []
        for _ in range(args.calls):
            started = time.perf_counter()
            result = supervisor.call("noop", "noop", PAYLOAD)
            calls.append(time.perf_counter() - started)
            assert result.ok
        sandbox_rss = psutil.Process(supervisor.package("noop").pid).memory_info().rss
    bare = interpreter_start(["-I", "-S", "-c", "pass"], args.loads)
    with_grpc = interpreter_start(["-c", "import grpc"], args.loads)
    bare_rss = psutil.Process().memory_info().rss  # for scale only: this benchmark process

    call_median, call_p99 = summary(calls)
    floor_median, floor_p99 = summary(floor)
    print(f"no-op call via Supervisor.call   median {call_median * 1e6:7.0f} us   p99 {call_p99 * 1e6:7.0f} us")
    print(f"  baseline: bare bidi stream      median {floor_median * 1e6:7.0f} us   p99 {floor_p99 * 1e6:7.0f} us")
    print(f"  ratio (median)                  {call_median / floor_median:.2f}x")
    load_median, load_p99 = summary(loads)
    print(f"load() to a ready sandbox         median {load_median * 1e3:7.1f} ms   max {max(loads) * 1e3:7.1f} ms")
    print(f"  baseline: python -I -S -c pass  median {statistics.median(bare) * 1e3:7.1f} ms"
          f"   ratio {load_median / statistics.median(bare):.1f}x")
    print(f"  baseline: python -c import grpc median {statistics.median(with_grpc) * 1e3:7.1f} ms"
          f"   ratio {load_median / statistics.median(with_grpc):.1f}x")
    print(f"idle sandbox RSS                  {sandbox_rss / 2**20:7.1f} MiB"
          f"   (this benchmark process: {bare_rss / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
