"""Throughput and CPU per call with one, two and three supervisors over one PostgreSQL registry.

All on this machine: every supervisor shares its two cores, so calls/s cannot grow
with supervisors here; what this shows is the cost. CPU per call counts every
process involved over the window (supervisors with their zygotes and sandboxes,
the PostgreSQL server, the callers), divided by the calls. The baseline, in the
same run and for each count, is the same number of supervisors each on its own
embedded registry (separate services, as before this), so the difference is what
the shared registry adds. It is not on the call path (a call never touches the
database), so it should add nothing measurable, and PostgreSQL's share should be
the supervisors' heartbeats alone. The last line compares every row with one
supervisor on its embedded registry: what more processes on the same cores cost.

Needs PostgreSQL installed (initdb, pg_ctl; Debian's `postgresql`).
Run: python benchmarks/multihost.py [--seconds S] [--callers N]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

from common import upload_noops
from daemon import daemon
from throughput import PACKAGES, caller, service_cpu

def tree_cpu(processes: list[psutil.Process]) -> float:
    return sum(service_cpu(process) for process in processes)


def measure(servers: str, callers: int, seconds: float, processes: list[psutil.Process],
            database: psutil.Process | None) -> tuple[float, float, float]:
    """(calls/s, CPU per call of everything, the database's CPU per call)."""
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue = context.Queue()
    start_at = time.time() + 3.0
    workers = [context.Process(target=caller, args=(servers, "service", seconds, start_at, results))
               for _ in range(callers)]
    for worker in workers:
        worker.start()
    while time.time() < start_at:
        time.sleep(0.001)
    before = tree_cpu(processes)
    database_before = service_cpu(database) if database is not None else 0.0
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    spent = tree_cpu(processes) - before
    database_spent = (service_cpu(database) - database_before) if database is not None else 0.0
    for worker in workers:
        worker.join()
    calls = sum(done for done, _ in outcomes)
    cpu = spent + database_spent + sum(used for _, used in outcomes)
    return calls / seconds, cpu / max(1, calls), database_spent / max(1, calls)


def wait_loaded(address: str) -> None:
    from supervisor.client import SupervisorClient

    with SupervisorClient(address) as client:
        deadline = time.monotonic() + 120
        while len([p for p in client.list() if p.state == p.READY]) < PACKAGES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not load the registry's packages")
            time.sleep(0.1)


@contextlib.contextmanager
def supervisors(count: int, scratch: Path, url: str | None) -> Iterator[list[tuple[str, psutil.Process]]]:
    """`count` supervisors: over the registry at `url`, or each on its own embedded registry (url None)."""
    with contextlib.ExitStack() as stack:
        started = []
        for index in range(count):
            kind = "shared" if url else "embedded"
            address, process = stack.enter_context(daemon(scratch / f"{kind}-{count}-{index}",
                                                          env={"CLOACA_SANDBOX_REGISTRY": url} if url else None))
            started.append((address, psutil.Process(process.pid)))
        yield started


def main() -> None:
    from tests.postgres import PostgresServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=4)
    args = parser.parse_args()
    why = PostgresServer.unavailable()
    if why:
        raise SystemExit(f"needs a PostgreSQL server: {why}")
    scratch = Path(tempfile.mkdtemp(prefix="bench-multihost-"))
    rows = []
    postgres = PostgresServer().start()
    try:
        assert postgres.process is not None
        database = psutil.Process(postgres.process.pid)
        for count in (1, 2, 3):
            with supervisors(count, scratch, None) as running:  # the baseline: separate hosts, as today
                for address, _ in running:
                    upload_noops(address, scratch, PACKAGES)
                servers = ",".join(address for address, _ in running)
                baseline = measure(servers, args.callers, args.seconds, [p for _, p in running], None)
            url = postgres.create_database()
            with supervisors(count, scratch, url) as running:
                upload_noops(running[0][0], scratch, PACKAGES)  # once: every supervisor loads it from the registry
                for address, _ in running:
                    wait_loaded(address)
                servers = ",".join(address for address, _ in running)
                shared = measure(servers, args.callers, args.seconds, [p for _, p in running], database)
            rows.append((count, baseline, shared))
    finally:
        postgres.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"CallTask no-op over {PACKAGES} packages, {args.callers} callers round-robin over every supervisor, "
          f"{args.seconds:g} s each, all on this machine's {psutil.cpu_count()} cores")
    print(f"{'supervisors':>11} | {'own embedded registries (baseline)':>34} | {'one PostgreSQL registry':>38} | "
          f"{'CPU/call vs baseline':>20}")
    print(f"{'':>11} | {'calls/s':>12} {'CPU/call':>21} | {'calls/s':>12} {'CPU/call':>12} {'of it PG':>12} |")
    for count, (base_rate, base_cpu, _), (rate, cpu, database_cpu) in rows:
        print(f"{count:>11} | {base_rate:12.0f} {base_cpu * 1e6:18.0f} us | {rate:12.0f} {cpu * 1e6:9.0f} us "
              f"{database_cpu * 1e6:9.2f} us | {cpu / base_cpu:19.2f}x")
    one = rows[0][1][1]
    print("CPU per call against one supervisor on its embedded registry: "
          + ", ".join(f"{count} embedded {base[1] / one:.2f}x, shared {shared[1] / one:.2f}x"
                      for count, base, shared in rows))

if __name__ == "__main__":
    main()
