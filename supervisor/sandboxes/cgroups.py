"""Kernel limits per sandbox: a memory cgroup and a pids cgroup, where this machine allows them.

cgroup v2 (one group with the memory and pids controllers) or v1 (a group in
each of the memory and pids hierarchies). The groups live under a parent made
for this supervisor, inside the supervisor's own cgroup when that is writable
(so the limits around the service still hold), else at the hierarchy's root.
A sandbox joins its groups itself, as the first step of its start, before any
package code runs; it can never leave them (it sees no cgroup filesystem, and
its files are not its own). The memory a sandbox reports is the group's
current usage, which counts only pages it dirtied itself, not the zygote's pages
it shares. Where no group can be made, `CgroupBackend.memory` is None and the
supervisor samples USS instead.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path("/sys/fs/cgroup")
PREFIX = "cloaca-sandbox-"


def _own_path(controller: str) -> str:
    """This process's group in `controller`'s v1 hierarchy ("" for v2), from /proc/self/cgroup."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return "/"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class _Hierarchy:
    """Where one controller's groups go: a v1 hierarchy, or the v2 one."""

    version: int
    controller: str  # "memory" or "pids" (both for v2)
    mount: Path  # /sys/fs/cgroup/memory, /sys/fs/cgroup/pids, or /sys/fs/cgroup (v2)

    def parents(self) -> list[Path]:
        own = _own_path(self.controller if self.version == 1 else "")
        candidates = [self.mount / own.lstrip("/")] if own not in ("", "/") else []
        return candidates + [self.mount]


class SandboxCgroup:
    """One sandbox's groups: the files it joins, its usage, its limit events, its processes."""

    def __init__(self, memory: tuple[Path, int] | None, pids: tuple[Path, int] | None) -> None:
        self.memory_group = memory  # (group dir, version)
        self.pids_group = pids
        self._paths = list(dict.fromkeys(group[0] for group in (memory, pids) if group is not None))

    @property
    def has_memory(self) -> bool:
        return self.memory_group is not None

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self._paths]

    def _read(self, group: tuple[Path, int] | None, v2: str, v1: str) -> str | None:
        if group is None:
            return None
        path, version = group
        try:
            return (path / (v2 if version == 2 else v1)).read_text()
        except OSError:
            return None

    def memory_bytes(self) -> int | None:
        value = self._read(self.memory_group, "memory.current", "memory.usage_in_bytes")
        return int(value) if value else None

    def peak_bytes(self) -> int | None:
        value = self._read(self.memory_group, "memory.peak", "memory.max_usage_in_bytes")
        return int(value) if value else None

    def oom_kills(self) -> int:
        text = self._read(self.memory_group, "memory.events", "memory.oom_control") or ""
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self._paths:
            try:
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(found)

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left in the groups, wait for it to be gone, and remove them. Blocks."""
        deadline = time.monotonic() + timeout
        while True:
            self.kill_all()
            busy = []
            for path in self._paths:
                try:
                    path.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    busy.append((path, exc))
            if not busy:
                return
            if time.monotonic() > deadline:
                for path, exc in busy:
                    log.warning("could not remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.005)  # a killed process leaves its group only once its memory is torn down


class CgroupBackend:
    """Makes a SandboxCgroup per sandbox with whatever controllers this machine lets us write."""

    def __init__(self, memory: tuple[Path, int] | None, pids: tuple[Path, int] | None) -> None:
        self.memory_parent = memory
        self.pids_parent = pids

    @property
    def memory(self) -> bool:
        return self.memory_parent is not None

    @property
    def pids(self) -> bool:
        return self.pids_parent is not None

    def describe(self) -> str:
        parts = []
        for name, parent in (("memory", self.memory_parent), ("pids", self.pids_parent)):
            parts.append(f"{name}: cgroup v{parent[1]} at {parent[0]}" if parent else f"{name}: no writable cgroup")
        return "; ".join(parts)

    @classmethod
    def detect(cls, skip: set[str] = frozenset()) -> "CgroupBackend":  # type: ignore[assignment]
        """Find writable hierarchies; controllers named in `skip` ("memory", "pids") are not used."""
        v2_controllers = set()
        try:
            if (ROOT / "cgroup.controllers").exists() and not (ROOT / "memory").is_dir():
                v2_controllers = set((ROOT / "cgroup.controllers").read_text().split())
        except OSError:
            pass
        found: dict[str, tuple[Path, int]] = {}
        for controller in ("memory", "pids"):
            if controller in skip:
                continue
            if controller in v2_controllers:
                hierarchy = _Hierarchy(2, controller, ROOT)
            elif (ROOT / controller / "cgroup.procs").exists():
                hierarchy = _Hierarchy(1, controller, ROOT / controller)
            else:
                continue
            parent = cls._make_parent(hierarchy, found)
            if parent is not None:
                found[controller] = (parent, hierarchy.version)
        return cls(found.get("memory"), found.get("pids"))

    @staticmethod
    def _make_parent(hierarchy: _Hierarchy, found: dict[str, tuple[Path, int]]) -> Path | None:
        if hierarchy.version == 2:
            for existing, version in found.values():
                if version == 2:  # one v2 parent serves both controllers
                    try:
                        (existing / "cgroup.subtree_control").write_text(f"+{hierarchy.controller}")
                        return existing
                    except OSError:
                        return None
        for base in hierarchy.parents():
            _remove_abandoned(base)
            parent = base / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                parent.mkdir()
                if hierarchy.version == 2:
                    (parent / "cgroup.subtree_control").write_text(f"+{hierarchy.controller}")
                return parent
            except OSError:
                try:
                    parent.rmdir()
                except OSError:
                    pass
        return None

    def create(self, name: str, memory_limit: int | None, max_processes: int | None) -> SandboxCgroup:
        suffix = f"{name[:40]}-{uuid.uuid4().hex[:8]}"
        memory = self._group(self.memory_parent, suffix)
        pids = memory if (memory and self.pids_parent and self.pids_parent[0] == self.memory_parent[0]) \
            else self._group(self.pids_parent, suffix)
        group = SandboxCgroup(memory, pids)
        try:
            if memory is not None and memory_limit is not None:
                _set_memory_limit(memory, memory_limit)
            if pids is not None and max_processes is not None:
                (pids[0] / "pids.max").write_text(str(max_processes))
        except OSError:
            group.remove()
            raise
        return group

    @staticmethod
    def _group(parent: tuple[Path, int] | None, suffix: str) -> tuple[Path, int] | None:
        if parent is None:
            return None
        path = parent[0] / suffix
        path.mkdir()
        return path, parent[1]

    def close(self) -> None:
        for parent in {self.memory_parent, self.pids_parent}:
            if parent is not None:
                try:
                    parent[0].rmdir()
                except OSError as exc:
                    log.debug("could not remove cgroup %s: %s", parent[0], exc)


def _set_memory_limit(group: tuple[Path, int], limit: int) -> None:
    path, version = group
    if version == 2:
        (path / "memory.max").write_text(str(limit))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")
        return
    (path / "memory.limit_in_bytes").write_text(str(limit))
    swap = path / "memory.memsw.limit_in_bytes"
    if swap.exists():
        try:
            swap.write_text(str(limit))
        except OSError:
            pass  # swap accounting off: the memory limit still holds


def _remove_abandoned(base: Path) -> None:
    """Kill and remove groups left by supervisors that died without cleaning up."""
    try:
        candidates = [path for path in base.glob(f"{PREFIX}*") if path.is_dir()]
    except OSError:
        return
    for parent in candidates:
        try:
            owner = int(parent.name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if _pid_alive(owner):
            continue
        for group in [path for path in parent.iterdir() if path.is_dir()]:
            SandboxCgroup((group, 1), None).remove(timeout=1.0)
        try:
            parent.rmdir()
            log.info("removed cgroup %s left by a supervisor that is gone", parent)
        except OSError:
            pass
