"""How a sandbox process is born: forked from the warm zygote, or spawned cold.

Both launchers give the same `SandboxProcess` (jupyter_client's provisioner
interface: `launch`, `poll`, `wait`, `kill`, `cleanup`), and both hand the child
the same start spec, so confinement and the start path are shared
(sandbox_runtime.start). `ZygoteLauncher` is the default: one pre-warmed
interpreter per supervisor forks every sandbox in milliseconds and shares its
imported modules with them. `SpawnLauncher` starts a fresh interpreter per
sandbox, for machines where a zygote cannot run.

Exit statuses come from whoever is the parent: the zygote reports each one on
its control socket; a spawned process is waited for through its pidfd. Kills go
through the pidfd, so a reused pid is never signalled.
"""

from __future__ import annotations

import abc
import array
import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
from typing import Any

from supervisor.sandboxes.output import OutputPipe
from supervisor.sandboxes.runtime import SANDBOX_PATH, RuntimeFiles, runtime_command

log = logging.getLogger(__name__)

_MAX_MESSAGE = 1024 * 1024
KILLED = 9 << 0  # a wait status of "killed by SIGKILL", for processes whose real status is lost


class LaunchError(RuntimeError):
    """The launcher could not start a process at all."""


class SandboxProcess:
    """A started sandbox (the outer process; inside its pid namespace it has a child, pid 1)."""

    def __init__(self, pid: int, pidfd: int | None) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.serving_pidfd: int | None = None  # the process that serves (pid 1 of its namespace)
        self._status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def exited(self, wait_status: int) -> None:
        if not self._status.done():
            self._status.set_result(wait_status)

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal) once it has exited, else None."""
        if not self._status.done():
            return None
        return os.waitstatus_to_exitcode(self._status.result())

    async def wait(self) -> int:
        status = await asyncio.shield(self._status)
        return os.waitstatus_to_exitcode(status)

    def serving(self, pid: int) -> None:
        """Note the process that serves the sandbox (a child of this one when it has its own pid namespace)."""
        if pid != self.pid and self.serving_pidfd is None:
            try:
                self.serving_pidfd = os.pidfd_open(pid)
            except OSError:
                pass

    def kill(self) -> None:
        """SIGKILL the sandbox: its pid namespace's init first, so everything in the namespace dies
        before this process reports the exit; then this process, should it still be there."""
        if self._status.done():
            return
        for pidfd in (self.serving_pidfd, self.pidfd):
            try:
                if pidfd is not None:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                    if pidfd == self.serving_pidfd:
                        return
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue

    def cleanup(self) -> None:
        if self.serving_pidfd is not None:
            os.close(self.serving_pidfd)
            self.serving_pidfd = None
        if self.pidfd is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.pidfd)
            except (RuntimeError, ValueError):
                pass
            os.close(self.pidfd)
            self.pidfd = None


class Launcher(abc.ABC):
    name: str

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready to launch (the zygote starts and imports the runtime here)."""

    @abc.abstractmethod
    async def launch(self, spec: dict[str, Any], output_fd: int) -> SandboxProcess:
        """Start one sandbox with `spec`; its stdout and stderr go to `output_fd`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop launching; every process launched is killed."""


def _receive(control: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, ancillary, _, _ = control.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(16 * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    return (json.loads(data) if data else None), fds


class ZygoteLauncher(Launcher):
    """Forks sandboxes from one warm interpreter; restarts it if it dies."""

    name = "zygote"

    def __init__(self, runtime: RuntimeFiles, start_timeout: float = 120.0) -> None:
        self.runtime = runtime
        self.start_timeout = start_timeout
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Future[dict[str, Any]] | None = None
        self._spawning: dict[int, asyncio.Future[tuple[int, int | None]]] = {}
        self._children: dict[int, SandboxProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._next_id = 0
        self._starting: asyncio.Lock | None = None
        self._output: OutputPipe | None = None  # what the zygote itself prints: logged
        self._closed = False
        self.zygote_pid: int | None = None

    async def start(self) -> None:
        if self._closed:
            raise LaunchError("the launcher has been closed")
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._control is not None:
                return
            await self._start_zygote()

    async def _start_zygote(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._output = OutputPipe("zygote", level=logging.INFO)
        try:
            self._process = subprocess.Popen(
                runtime_command(self.runtime, "sandbox_runtime.zygote", [str(theirs.fileno())]),
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=self._output.write_fd,
                stderr=self._output.write_fd, env=_zygote_environment(), cwd="/")
        except OSError as exc:
            ours.close()
            self._output.close()
            raise LaunchError(f"could not start the zygote: {exc}") from exc
        finally:
            theirs.close()
            self._output.close_write_end()
        self._control = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_message)
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            output = self._output
            if output is not None:
                await output.drained(2.0)
            said = output.tail(20) if output is not None else ""
            self._teardown()
            raise LaunchError(f"the zygote did not start ({exc or 'timed out'})" + (f":\n{said}" if said else ""))
        self.zygote_pid = ready["pid"]
        log.info("zygote ready (pid %d, Python %s)", ready["pid"], ready.get("python", "?"))

    def _on_message(self) -> None:
        assert self._control is not None
        try:
            message, fds = _receive(self._control)
        except BlockingIOError:
            return
        except OSError:
            message, fds = None, []
        if message is None:
            self._zygote_gone()
            return
        op = message.get("op")
        if op == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(message)
        elif op == "spawned":
            future = self._spawning.pop(message["id"], None)
            pidfd = fds.pop(0) if fds else None
            if future is not None and not future.done():
                future.set_result((message["pid"], pidfd))
            elif pidfd is not None:
                os.close(pidfd)
        elif op == "exited":
            process = self._children.pop(message["pid"], None)
            if process is not None:
                process.exited(message["status"])
            else:
                self._early_exits[message["pid"]] = message["status"]
        for fd in fds:
            os.close(fd)

    def _zygote_gone(self) -> None:
        """The zygote died (or closed): every sandbox it held is dead too (parent-death signal)."""
        if self.zygote_pid is not None:
            log.warning("the zygote exited; sandboxes it forked are gone, and the next start makes a new one")
        error = ConnectionError("the zygote exited")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for future in self._spawning.values():
            if not future.done():
                future.set_exception(error)
        self._spawning.clear()
        for process in self._children.values():
            process.exited(KILLED)
        self._children.clear()
        if self._ready is None or self._ready.done():
            self._teardown()  # (a zygote that never got ready is torn down by its starter, after its output)

    def _teardown(self) -> None:
        if self._control is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._control.fileno())
            except (RuntimeError, ValueError):
                pass
            self._control.close()
            self._control = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._process = None
        if self._output is not None:
            self._output.close()
            self._output = None

    async def launch(self, spec: dict[str, Any], output_fd: int) -> SandboxProcess:
        await self.start()
        assert self._control is not None
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[tuple[int, int | None]] = loop.create_future()
        self._spawning[request_id] = future
        data = json.dumps({"op": "spawn", "id": request_id, "spec": spec}).encode()
        try:
            self._control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [output_fd]))])
        except OSError as exc:
            self._spawning.pop(request_id, None)
            raise LaunchError(f"could not reach the zygote: {exc}") from exc
        try:
            pid, pidfd = await future
        except ConnectionError as exc:
            raise LaunchError(f"the zygote exited while starting a sandbox: {exc}") from None
        process = SandboxProcess(pid, pidfd)
        early = self._early_exits.pop(pid, None)
        if early is not None:
            process.exited(early)
        else:
            self._children[pid] = process
        return process

    async def close(self) -> None:
        self._closed = True
        for process in list(self._children.values()):
            process.kill()
        self._teardown()


def _zygote_environment() -> dict[str, str]:
    """The zygote's own environment, which every sandbox's /proc/1/environ shows: nothing of the host's."""
    env = {key: os.environ[key] for key in ("LANG", "LC_ALL", "TZ") if key in os.environ}
    env["PATH"] = SANDBOX_PATH
    env.setdefault("LANG", "C.UTF-8")
    return env


class SpawnLauncher(Launcher):
    """A fresh interpreter per sandbox: slower to start, needs nothing shared."""

    name = "spawn"

    def __init__(self, runtime: RuntimeFiles) -> None:
        self.runtime = runtime
        self._processes: set[SandboxProcess] = set()

    async def start(self) -> None:
        return None

    async def launch(self, spec: dict[str, Any], output_fd: int) -> SandboxProcess:
        loop = asyncio.get_running_loop()
        try:
            popen = subprocess.Popen(runtime_command(self.runtime, "sandbox_runtime.start", []),
                                     stdin=subprocess.PIPE, stdout=output_fd, stderr=output_fd,
                                     env=_zygote_environment(), cwd="/", start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"could not start a sandbox interpreter: {exc}") from exc
        assert popen.stdin is not None
        try:
            popen.stdin.write(json.dumps(spec).encode())
            popen.stdin.close()
        except OSError:
            pass  # it died at once; its exit says why
        pidfd = os.pidfd_open(popen.pid)
        process = SandboxProcess(popen.pid, pidfd)
        self._processes.add(process)

        def reap() -> None:
            try:
                pid, status = os.waitpid(popen.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = popen.pid, KILLED
            if pid == 0:
                return
            popen.returncode = os.waitstatus_to_exitcode(status)
            loop.remove_reader(pidfd)
            self._processes.discard(process)
            process.exited(status)

        loop.add_reader(pidfd, reap)
        return process

    async def close(self) -> None:
        for process in list(self._processes):
            process.kill()
        for process in list(self._processes):
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                pass
