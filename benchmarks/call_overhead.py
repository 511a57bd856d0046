"""A no-op task call, embedded and through the public service, against same-run transport floors.

- `Supervisor.call` (the embedding API, this process) against the stream floor: a
  sync client's round trip on one long-lived bidi stream to a grpc.aio echo server
  over a Unix socket, the shape of the supervisor <-> sandbox link.
- A public `CallTask` (a sync client in this process, `cloaca-sandbox serve` in its
  own) against the sum of two floors: a sync unary echo over TCP loopback (client
  -> service) plus the stream floor (service -> sandbox).

Targets (issue 8): Supervisor.call <= 1.2x the stream floor; CallTask median
<= 1.3x and p99 <= 1.5x the floors' sum.

Run: python benchmarks/call_overhead.py [--calls N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from common import PAYLOAD, Summary, echo_server, free_port, noop_archive, stream_floor, timed, unary_floor
from daemon import daemon

from supervisor.client import SupervisorClient  # noqa: E402
from supervisor.config import SupervisorConfig  # noqa: E402
from supervisor.facade import Supervisor  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    calls = args.calls

    scratch = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    archive = scratch / "noop.cloacina"
    archive.write_bytes(noop_archive())

    with echo_server(f"unix:{scratch}/echo.sock") as unix, echo_server(f"127.0.0.1:{free_port()}") as tcp:
        stream = Summary(stream_floor(unix, PAYLOAD, calls))
        unary = Summary(unary_floor(tcp, PAYLOAD, calls))

    with Supervisor(SupervisorConfig(memory_limit_mib=None)) as supervisor:
        supervisor.load(archive)
        embedded = Summary(timed(lambda: supervisor.call("noop", "noop", PAYLOAD), calls, warmup=calls // 10))

    with daemon(scratch / "data") as (address, _), SupervisorClient(address) as client:
        client.upload(archive)
        public = Summary(timed(lambda: client.call("noop", "noop", PAYLOAD), calls, warmup=calls // 10))

    floors_median = unary.median + stream.median
    floors_p99 = unary.p99 + stream.p99
    print(f"floor: sync client, bidi stream (Unix)   {stream.us()}")
    print(f"floor: sync client, unary echo (TCP)     {unary.us()}")
    print(f"Supervisor.call no-op                   {embedded.us()}")
    print(f"  ratio to the stream floor              median {embedded.median / stream.median:.2f}x   "
          f"(target <= 1.2x)")
    print(f"public CallTask no-op                   {public.us()}")
    print(f"  ratio to unary + stream floors         median {public.median / floors_median:.2f}x (target <= 1.3x)"
          f"   p99 {public.p99 / floors_p99:.2f}x (target <= 1.5x)")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
