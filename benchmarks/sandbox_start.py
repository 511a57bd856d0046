"""How fast a sandbox starts, restarts, and how much memory an idle one holds.

Figures, each beside a baseline measured in the same run:
- `load()` of a trivial package to a ready sandbox, forked from the zygote and
  confined, against `python -c "import grpc"` (the floor for any process that
  speaks gRPC) and `python -I -S -c pass`;
- the same with every confinement layer off (CLOACA_SANDBOX_SIMULATE_MISSING_LAYERS),
  so the difference is what confinement costs a start (target: at most 10 ms);
- the same through the spawn launcher (a fresh interpreter per sandbox);
- `UploadPackage` to READY through the public service;
- a sandbox killed with SIGKILL, to its next answered call;
- an idle sandbox's USS, PSS and RSS (target: USS at most 15 MiB).

Targets (issue 8): upload to READY and SIGKILL to serving again at most 0.4x
`python -c "import grpc"`.

Run: python benchmarks/sandbox_start.py [--loads N]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import psutil

from common import PAYLOAD, Summary, interpreter_start, noop_archive
from daemon import daemon

from supervisor.client import SupervisorClient  # noqa: E402
from supervisor.config import LauncherKind, SupervisorConfig  # noqa: E402
from supervisor.facade import Supervisor  # noqa: E402
from supervisor.sandboxes.isolation import SIMULATE_MISSING  # noqa: E402

EVERY_LAYER = "identity,user,pid,mount,network,ipc,cgroup,pids,no_new_privs,landlock,seccomp"


def loads(runs: int, launcher: LauncherKind = LauncherKind.ZYGOTE) -> list[float]:
    """load() of `runs` different packages, each a fresh sandbox (none torn down meanwhile)."""
    archives = [noop_archive(f"noop-{index}") for index in range(runs + 1)]
    with Supervisor(SupervisorConfig(memory_limit_mib=None, launcher=launcher)) as supervisor:
        supervisor.load(archives[-1])  # the first also waits for the zygote; not counted
        samples = []
        for archive in archives[:-1]:
            started = time.perf_counter()
            supervisor.load(archive)
            samples.append(time.perf_counter() - started)
        return samples


def restarts(archive: bytes, runs: int) -> tuple[list[float], dict[str, float]]:
    """SIGKILL the sandbox, then time until a call is answered again; and the idle sandbox's memory."""
    samples = []
    with Supervisor(SupervisorConfig(memory_limit_mib=None, restart_backoff_initial=0,
                                     stable_after=0)) as supervisor:
        supervisor.load(archive)
        for _ in range(runs):
            supervisor.call("noop", "noop", PAYLOAD)
            pid = supervisor.package("noop").pid
            started = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            while True:
                result = supervisor.call("noop", "noop", PAYLOAD, timeout=30)
                if result.ok and supervisor.package("noop").pid != pid:
                    break
            samples.append(time.perf_counter() - started)
        time.sleep(1)  # idle: let the sandbox settle before it is measured
        info = psutil.Process(supervisor.package("noop").pid).memory_full_info()
        memory = {"uss": info.uss, "pss": info.pss, "rss": info.rss,
                  "cgroup": supervisor.package("noop").memory_bytes}
    return samples, memory


def uploads(archive_path: Path, runs: int, scratch: Path) -> list[float]:
    with daemon(scratch / "data") as (address, _), SupervisorClient(address) as client:
        client.upload(archive_path)
        samples = []
        for index in range(runs):
            # A new version each time: each upload is a new package's sandbox start, not a no-op.
            path = scratch / f"noop-{index}.cloacina"
            path.write_bytes(noop_archive(f"noop-{index}"))
            started = time.perf_counter()
            client.upload(path)
            samples.append(time.perf_counter() - started)
        return samples


def main() -> None:
    # The restarts it provokes and the layers it switches off on purpose are not news.
    logging.getLogger("supervisor").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=15)
    args = parser.parse_args()
    runs = args.loads
    scratch = Path(tempfile.mkdtemp(prefix="bench-start-"))
    archive = noop_archive()
    (scratch / "noop.cloacina").write_bytes(archive)

    bare = Summary(interpreter_start(["-I", "-S", "-c", "pass"], runs))
    with_grpc = Summary(interpreter_start(["-c", "import grpc"], runs))
    confined = Summary(loads(runs))
    os.environ[SIMULATE_MISSING] = EVERY_LAYER
    unconfined = Summary(loads(runs))
    del os.environ[SIMULATE_MISSING]
    spawned = Summary(loads(max(3, runs // 3), LauncherKind.SPAWN))
    uploaded = Summary(uploads(scratch / "noop.cloacina", runs, scratch))
    restarted_samples, memory = restarts(archive, runs)
    restarted = Summary(restarted_samples)

    grpc_ms = with_grpc.median
    print(f"baseline: python -I -S -c pass               {bare.ms()}")
    print(f"baseline: python -c 'import grpc'           {with_grpc.ms()}")
    print(f"load() to ready, zygote, confined           {confined.ms()}   {confined.median / grpc_ms:.2f}x import grpc")
    print(f"load() to ready, zygote, no confinement     {unconfined.ms()}")
    print(f"  confinement adds                           {(confined.median - unconfined.median) * 1e3:+.1f} ms "
          f"median (target <= 10 ms)")
    print(f"load() to ready, spawn launcher, confined   {spawned.ms()}   {spawned.median / grpc_ms:.2f}x import grpc")
    print(f"UploadPackage to READY (public service)     {uploaded.ms()}   {uploaded.median / grpc_ms:.2f}x import grpc"
          f" (target <= 0.4x)")
    print(f"SIGKILL to the next answered call           {restarted.ms()}   {restarted.median / grpc_ms:.2f}x import grpc"
          f" (target <= 0.4x)")
    print(f"idle sandbox: USS {memory['uss'] / 2**20:.1f} MiB (target <= 15), PSS {memory['pss'] / 2**20:.1f} MiB, "
          f"RSS {memory['rss'] / 2**20:.1f} MiB; its cgroup's usage {memory['cgroup'] / 2**20:.1f} MiB")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
