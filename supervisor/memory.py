"""Hard memory limits from the kernel, where this machine allows one.

cgroup v2 (`memory.max`) or v1 (`memory.limit_in_bytes`) when a writable
hierarchy is found; otherwise none, and the supervisor's psutil sampling is
the only guard. A cgroup also lists every process of a sandbox, including
those that left its process group, so nothing it started outlives it.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


class MemoryGroup:
    """One sandbox's cgroup: its limit, its processes, whether the kernel OOM-killed in it."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    def set_limit(self, limit_bytes: int) -> None:
        if self.version == 2:
            (self.path / "memory.max").write_text(str(limit_bytes))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
        else:
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            swap = self.path / "memory.memsw.limit_in_bytes"
            if swap.exists():
                try:
                    swap.write_text(str(limit_bytes))
                except OSError:
                    pass  # swap accounting off: the memory limit still holds

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except OSError:
            pass
        return 0

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self) -> None:
        self.kill_all()
        try:
            self.path.rmdir()
        except OSError as exc:
            log.debug("could not remove cgroup %s: %s", self.path, exc)


def _remove_abandoned(root: Path, version: int) -> None:
    """Kill and remove groups left by supervisors that died without cleaning up."""
    try:
        candidates = list(root.glob("cloaca-sandbox-*"))
    except OSError:
        return
    for parent in candidates:
        try:
            owner = int(parent.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        for group in [path for path in parent.iterdir() if path.is_dir()]:
            MemoryGroup(group, version).remove()
        try:
            parent.rmdir()
            log.info("removed cgroup %s left by a supervisor that is gone", parent)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MemoryBackend:
    """Makes a MemoryGroup per sandbox, or None where no hard limit is possible."""

    def __init__(self, parent: Path | None, version: int) -> None:
        self.parent = parent
        self.version = version

    @property
    def description(self) -> str:
        if self.parent is None:
            return "no writable cgroup: memory limits are enforced by psutil sampling only"
        return f"cgroup v{self.version} at {self.parent}: memory limits are hard kernel limits, backed by psutil sampling"

    @classmethod
    def detect(cls) -> "MemoryBackend":
        for version, root in ((2, V2_ROOT), (1, V1_ROOT)):
            _remove_abandoned(root, version)
            parent = root / f"cloaca-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                if version == 2 and "memory" not in (root / "cgroup.controllers").read_text().split():
                    continue
                if version == 1 and not (root / "memory.limit_in_bytes").exists():
                    continue
                parent.mkdir()
                if version == 2:
                    # Children of this group need the memory controller delegated to them.
                    (parent / "cgroup.subtree_control").write_text("+memory")
                return cls(parent, version)
            except OSError:
                try:
                    parent.rmdir()
                except OSError:
                    pass
        return cls(None, 0)

    def create(self, name: str, limit_bytes: int | None) -> MemoryGroup | None:
        if self.parent is None:
            return None
        path = self.parent / f"{name}-{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir()
            group = MemoryGroup(path, self.version)
            if limit_bytes is not None:
                group.set_limit(limit_bytes)
            return group
        except OSError as exc:
            log.warning("could not create a cgroup for %s (%s): psutil sampling only", name, exc)
            try:
                path.rmdir()
            except OSError:
                pass
            return None

    def close(self) -> None:
        if self.parent is not None:
            try:
                self.parent.rmdir()
            except OSError as exc:
                log.debug("could not remove cgroup %s: %s", self.parent, exc)
