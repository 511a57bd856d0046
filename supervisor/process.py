"""One sandbox interpreter as an OS process: start it, watch it, kill its whole tree."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from pathlib import Path

import psutil

from supervisor.interpreter import sandbox_command, sandbox_environment
from supervisor.memory import MemoryGroup

log = logging.getLogger(__name__)


class SandboxProcess:
    """A started sandbox interpreter, in its own session and (where possible) cgroup.

    Its socket lives in a fresh private directory (mode 0700) kept short,
    because a Unix socket path may not exceed 107 bytes.
    """

    def __init__(self, name: str, package_paths: list[str], entry_module: str, runtime_dir: Path,
                 work_dir: Path, max_concurrency: int, output_limit: int, memory_group: MemoryGroup | None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.name = name
        self.memory_group = memory_group
        self.socket_dir = Path(tempfile.mkdtemp(prefix="cs-"))  # mkdtemp makes it 0700
        self.socket_path = self.socket_dir / "s"
        home, tmp = work_dir / "home", work_dir / "tmp"
        for path in (home, tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        command = sandbox_command(package_paths, runtime_dir, "sandbox_runtime.server",
                                  [entry_module, str(self.socket_path), str(max_concurrency), str(output_limit)])
        self._tail: deque[str] = deque(maxlen=50)
        self.popen = subprocess.Popen(
            # stdin is the sandbox's lifeline: it exits when this end closes, even on SIGKILL.
            command, cwd=tmp, env=sandbox_environment(home, tmp, extra_env), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if memory_group is not None:
            # Safe after the fact: the sandbox starts nothing before its first task call.
            memory_group.add(self.popen.pid)
        self._drain = threading.Thread(target=self._drain_output, name=f"sandbox-output-{name}", daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _drain_output(self) -> None:
        """Log what the interpreter writes outside task calls; keep the tail for diagnostics."""
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self._tail.append(line)
            log.debug("[%s %d] %s", self.name, self.pid, line)

    def output_tail(self) -> str:
        self._drain.join(timeout=1.0)
        return "\n".join(self._tail)

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def tree_rss(self) -> int:
        """Resident memory of the sandbox and every descendant, in bytes."""
        total = 0
        try:
            root = psutil.Process(self.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        for member in members:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
        return total

    def kill_tree(self) -> None:
        """SIGKILL the sandbox and everything it started, until nothing is left."""
        for _ in range(10):
            victims = set(self._descendants())
            if self.popen.poll() is None:
                victims.add(self.pid)
            if self.memory_group is not None:
                victims.update(self.memory_group.pids())
            if not victims:
                break
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            psutil.wait_procs([p for p in map(_process, victims) if p is not None], timeout=1.0)
        self.popen.wait()

    def _descendants(self) -> list[int]:
        try:
            return [child.pid for child in psutil.Process(self.pid).children(recursive=True)]
        except psutil.Error:
            return []

    def cleanup(self) -> None:
        """After the process is gone: close its pipe and remove its socket directory."""
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        if self.memory_group is not None:
            self.memory_group.remove()


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"
