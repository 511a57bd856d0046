"""What every sandbox of one supervisor shares, opened once: the runtime dir, the cgroup
backend, the launcher (and its zygote), and the isolation policy with its machine probe."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from sandbox_runtime.markers import PROBE_MARK
from supervisor.config import LauncherKind, SupervisorConfig
from supervisor.sandboxes.cgroups import CgroupBackend
from supervisor.sandboxes.isolation import IsolationPolicy, MachineLayers, SandboxPaths, simulated_missing
from supervisor.sandboxes.launchers import Launcher, SpawnLauncher, ZygoteLauncher
from supervisor.sandboxes.output import OutputPipe
from supervisor.sandboxes.runtime import find_runtime

log = logging.getLogger(__name__)

T = TypeVar("T")

_SOCKET_PATH_BUDGET = 100  # a Unix socket path may not exceed 107 bytes; ".../sXXXXXXXX/s/s" must fit


@dataclass
class SandboxServices:
    config: SupervisorConfig
    launcher: Launcher
    cgroups: CgroupBackend
    isolation: IsolationPolicy
    run_dir: Path  # short host paths for each incarnation's socket and root mount point
    blocking: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=2, thread_name_prefix="sandbox-cleanup"))

    async def in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Blocking work (removing a cgroup or a tree) off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.blocking, function, *args)

    @property
    def machine(self) -> MachineLayers:
        assert self.isolation.machine is not None
        return self.isolation.machine

    async def close(self) -> None:
        await self.launcher.close()
        await self.in_thread(self.cgroups.close)
        await self.in_thread(shutil.rmtree, self.run_dir, True)
        self.blocking.shutdown(wait=True)


def _run_dir(work_dir: Path) -> Path:
    """Where sockets go: inside the work dir when its path is short enough, else a private temp dir."""
    candidate = work_dir / "run"
    if len(str(candidate)) + 20 <= _SOCKET_PATH_BUDGET:
        candidate.mkdir(mode=0o711, parents=True, exist_ok=True)
        return candidate
    return Path(tempfile.mkdtemp(prefix="cloaca-sandbox-run-"))


async def open_services(config: SupervisorConfig, work_dir: Path) -> SandboxServices:
    runtime = find_runtime()
    missing = simulated_missing()
    skip = ({"memory"} if "cgroup" in missing else set()) | ({"pids"} if "pids" in missing else set())
    cgroups = CgroupBackend.detect(skip=skip)
    log.info("cgroups: %s", cgroups.describe())
    isolation = IsolationPolicy(config.isolation, runtime, cgroups.memory, cgroups.pids,
                                uid_base=config.sandbox_uid_base)
    launcher: Launcher = ZygoteLauncher(runtime) if config.launcher is LauncherKind.ZYGOTE else SpawnLauncher(runtime)
    services = SandboxServices(config, launcher, cgroups, isolation, _run_dir(work_dir))
    try:
        await launcher.start()
        machine = isolation.record_probe(await probe(services))
    except BaseException:
        await services.close()
        raise
    missing = machine.missing()
    holding = ", ".join(f"{layer} {state}" for layer, state in machine.layers.items() if layer not in missing)
    if missing:
        log.warning("sandbox isolation: this machine does not allow %s; what holds: %s",
                    ", ".join(f"{layer} {state}" for layer, state in missing.items()), holding or "nothing")
    else:
        log.info("sandbox isolation: every layer holds: %s", holding)
    return services


async def probe(services: SandboxServices) -> dict[str, str]:
    """Start a throwaway child that tries every confinement layer; what it reports held."""
    scratch = Path(tempfile.mkdtemp(prefix="p", dir=services.run_dir))
    try:
        package = scratch / "package"
        paths = SandboxPaths(package, [package], scratch / "s", scratch / "r", scratch / "home", scratch / "tmp")
        for directory in (package, paths.socket_dir, paths.root_mountpoint, paths.home, paths.tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        plan, uid = services.isolation.probe_plan(paths)
        spec = {"probe": True, "entry_module": "", "package_paths": [], "socket_path": "", "token": "",
                "max_concurrency": 1, "output_limit": 1024, "max_context_bytes": 1024, "env": {}, "cwd": "/",
                "confinement": plan}
        output = OutputPipe("isolation probe")
        try:
            process = await services.launcher.launch(spec, output.write_fd)
            output.close_write_end()
            returncode = await asyncio.wait_for(process.wait(), 60)
            process.cleanup()
            await output.drained(5)
        finally:
            output.close()
            if uid is not None:
                services.isolation.uids.release(uid)
        for line in output.lines:
            if line.startswith(PROBE_MARK):
                return json.loads(line[len(PROBE_MARK):])
        log.warning("the isolation probe %s without a report: %s", f"exited {returncode}", output.tail(10))
        return {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
