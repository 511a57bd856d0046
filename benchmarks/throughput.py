"""Throughput of no-op calls through the public service as callers are added, and CPU per call.

N caller processes (each a sync client on its own channel) call no-op tasks of 4
packages round-robin for a fixed window; calls/s is what they completed, and CPU
per call is the service's (supervisor, zygote and sandboxes) plus the callers' CPU
time over the window, divided by the calls. The same callers against a bare unary
echo server (the floor: a gRPC hop with none of our code) show what the machine
allows. Every gRPC row is CPU-bound on this 2-core box: throughput should grow with
callers until the cores are busy, then hold.

Run: python benchmarks/throughput.py [--seconds S] [--callers 1,2,4,8,16]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from common import PAYLOAD, echo_server, free_port, upload_noops
from daemon import daemon

PACKAGES = 4


def caller(address: str, kind: str, seconds: float, start_at: float, results: "multiprocessing.Queue[tuple]") -> None:
    import grpc

    from supervisor.client import SupervisorClient

    if kind == "floor":
        channel = grpc.insecure_channel(address)
        echo = channel.unary_unary("/bench.Echo/Echo")
        call = lambda index: echo(PAYLOAD)  # noqa: E731
    else:
        client = SupervisorClient(address)
        call = lambda index: client.call(f"noop-{index % PACKAGES}", "noop", PAYLOAD)  # noqa: E731
    for index in range(20):
        call(index)
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_before = time.process_time()
    done, index, deadline = 0, 0, start_at + seconds
    while time.time() < deadline:
        call(index)
        index += 1
        done += 1
    results.put((done, time.process_time() - cpu_before))


def service_cpu(process: psutil.Process) -> float:
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def measure(address: str, kind: str, callers: int, seconds: float, server: psutil.Process | None) -> tuple[float, float]:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 3.0  # every caller connected and warmed up first
    processes = [context.Process(target=caller, args=(address, kind, seconds, start_at, results))
                 for _ in range(callers)]
    for process in processes:
        process.start()
    while time.time() < start_at:
        time.sleep(0.001)
    server_before = service_cpu(server) if server is not None else 0.0
    outcomes = [results.get(timeout=seconds + 120) for _ in processes]
    server_cpu = (service_cpu(server) - server_before) if server is not None else 0.0
    for process in processes:
        process.join()
    calls = sum(done for done, _ in outcomes)
    cpu = server_cpu + sum(spent for _, spent in outcomes)
    return calls / seconds, cpu / max(1, calls)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--callers", default="1,2,4,8,16")
    args = parser.parse_args()
    counts = [int(n) for n in args.callers.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    rows = []
    with echo_server(f"127.0.0.1:{free_port()}") as address:
        echo_process = None
        for process in psutil.Process().children():
            if "--serve-echo" in " ".join(process.cmdline()):
                echo_process = process
        for count in counts:
            rows.append(("floor: unary echo", count, *measure(address, "floor", count, args.seconds, echo_process)))
    with daemon(scratch / "data") as (address, process):
        upload_noops(address, scratch, PACKAGES)
        server = psutil.Process(process.pid)
        for count in counts:
            rows.append((f"CallTask over {PACKAGES} packages", count, *measure(address, "service", count,
                                                                              args.seconds, server)))
    print(f"{'':32} {'callers':>7} {'calls/s':>9} {'CPU per call':>13}")
    for label, count, rate, cpu in rows:
        print(f"{label:32} {count:7d} {rate:9.0f} {cpu * 1e6:10.0f} us")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
