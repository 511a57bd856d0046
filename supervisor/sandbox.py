"""One package's sandbox over its lifetime: start, serve calls, die, restart.

A `PackageSandbox` owns a succession of incarnations (a process plus its
channel). A watcher thread waits on each; when one dies, every call waiting
on it is answered with why (the limit that killed it, or the crash), and a
new one is started with backoff. One that keeps failing to start is marked
failed with its last error instead of restarting forever.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cloaca.engine import COMPLETED, FAILED, Status
from cloaca.errors import CRASHED, MEMORY_LIMIT, TIMEOUT, UNAVAILABLE, Frame, TaskError
from sandbox_runtime.protocol import sandbox_pb2 as pb
from supervisor.channel import ChannelClosed, SandboxChannel, SandboxGone
from supervisor.config import MIB, EffectiveLimits, SupervisorConfig
from supervisor.discovery import Discovery, discovery_from_proto, import_timeout_message
from supervisor.errors import DiscoveryError, ImportTimeoutError
from supervisor.interpreter import build_runtime_dir
from supervisor.memory import MemoryBackend
from supervisor.package import ExtractedPackage
from supervisor.process import SandboxProcess, describe_exit
from supervisor.results import CallOutput, CallResult, OverloadedError, PackageUnavailableError

log = logging.getLogger(__name__)

STARTING, READY, RESTARTING, FAILED_STATE, STOPPING, STOPPED = (
    "starting", "ready", "restarting", "failed", "stopping", "stopped")


@dataclass(eq=False)
class Incarnation:
    """One running sandbox process and its channel."""

    process: SandboxProcess
    channel: SandboxChannel
    started_at: float = field(default_factory=time.monotonic)
    kill_reason: TaskError | None = None  # set before we kill it: what its waiting calls are told
    peak_rss: int = 0
    dead: threading.Event = field(default_factory=threading.Event)

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at


def error_from_proto(message: pb.TaskError) -> TaskError:
    frames = tuple(Frame(f.file, f.line, f.function) for f in message.frames)
    return TaskError(message.kind, message.type, message.message, message.traceback, frames)


class PackageSandbox:
    def __init__(self, package: ExtractedPackage, limits: EffectiveLimits, config: SupervisorConfig,
                 runtime_dir: Path, memory: MemoryBackend) -> None:
        self.package = package
        self.limits = limits
        self.config = config
        self.runtime_dir = runtime_dir
        self.memory = memory
        self.work_dir = package.root.parent / f"{package.root.name}.run"
        self.state = STARTING
        self.last_error: str | None = None
        self.restarts = 0
        self._current: Incarnation | None = None
        self._running = 0
        self._admitted = 0
        self._quick_deaths = 0
        self._restarting = False
        self._cond = threading.Condition()
        self._stopping = threading.Event()

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def pid(self) -> int | None:
        current = self._current
        return current.process.pid if current is not None else None

    # --- starting ----------------------------------------------------------------

    def start(self) -> Discovery:
        """Start the first incarnation; raises DiscoveryError or ImportTimeoutError."""
        incarnation, discovery = self._launch()
        with self._cond:
            self._current = incarnation
            self.state = READY
            self._cond.notify_all()
        self._watch(incarnation)
        return discovery

    def _launch(self) -> tuple[Incarnation, Discovery]:
        timeout = self.limits.import_timeout
        deadline = time.monotonic() + timeout
        group = self.memory.create(self.name, self.limits.memory_limit_bytes)
        try:
            process = SandboxProcess(self.name, self.package.import_paths, self.package.entry_module,
                                     self.runtime_dir, self.work_dir, self.limits.max_concurrency,
                                     self.config.output_limit_bytes, group,
                                     extra_env=self.package.sandbox_environment())
        except BaseException:
            if group is not None:
                group.remove()
            raise
        channel = SandboxChannel(str(process.socket_path), on_stream_end=self._wake)
        try:
            if not channel.wait_ready(deadline, alive=lambda: process.poll() is None and not self._stopping.is_set()):
                raise self._start_failure(process, timeout)
            try:
                answer = channel.discover(timeout=max(0.001, deadline - time.monotonic()))
            except grpc.RpcError:
                raise self._start_failure(process, timeout) from None
            if not answer.ok:
                error = error_from_proto(answer.error)
                raise DiscoveryError(f"importing the entry module failed: {error}", error.traceback)
            discovery = discovery_from_proto(answer.discovery)
            incarnation = Incarnation(process, channel)
            channel.open_calls()
        except BaseException:
            channel.close()
            process.kill_tree()
            process.cleanup()
            raise
        log.info("sandbox for %s %s ready (pid %d)", self.name, self.package.version, process.pid)
        return incarnation, discovery

    @staticmethod
    def _start_failure(process: SandboxProcess, timeout: float) -> DiscoveryError:
        returncode = process.poll()
        if returncode is None:
            return ImportTimeoutError(import_timeout_message(timeout))
        return DiscoveryError(f"the sandbox {describe_exit(returncode)} before it was ready", process.output_tail())

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- dying and restarting ----------------------------------------------------

    def _watch(self, incarnation: Incarnation) -> None:
        threading.Thread(target=self._watch_incarnation, args=(incarnation,), daemon=True,
                         name=f"sandbox-watch-{self.name}").start()

    def _watch_incarnation(self, incarnation: Incarnation) -> None:
        returncode = incarnation.process.wait()
        error = self._death_error(incarnation, returncode)
        stopping = self._stopping.is_set()
        with self._cond:
            # Swap it out first, so no new call is sent to it while we answer its calls.
            if self._current is incarnation:
                self._current = None
            if not stopping:
                self.state = RESTARTING
                self.last_error = error.message
                self._restarting = True
            self._cond.notify_all()
        incarnation.channel.fail_all(error)
        incarnation.process.kill_tree()  # whatever it started dies with it
        incarnation.channel.close()
        incarnation.process.cleanup()
        incarnation.dead.set()
        if stopping:
            return
        log.warning("sandbox for %s (pid %d) %s: %s; restarting", self.name, incarnation.process.pid,
                    describe_exit(returncode), error.message)
        if incarnation.uptime < self.config.stable_after:
            self._quick_deaths += 1
        else:
            self._quick_deaths = 0
        try:
            self._restart()
        finally:
            with self._cond:
                self._restarting = False
                self._cond.notify_all()

    def _death_error(self, incarnation: Incarnation, returncode: int) -> TaskError:
        if incarnation.kill_reason is not None:
            return incarnation.kill_reason
        group = incarnation.process.memory_group
        if group is not None and group.oom_kills() > 0:
            peak = group.peak_bytes() or incarnation.peak_rss
            return self._memory_error(peak, "the kernel's OOM killer stopped it at its hard limit")
        return TaskError(CRASHED, "SandboxCrashed",
                         f"the sandbox {describe_exit(returncode)} while the call was running")

    def _memory_error(self, peak: int, how: str) -> TaskError:
        limit = self.limits.memory_limit_mib
        return TaskError(MEMORY_LIMIT, "MemoryLimitExceeded",
                         f"the sandbox exceeded its memory limit of {limit} MiB (peak measured "
                         f"{peak / MIB:.1f} MiB); {how}, and it was restarted")

    def _restart(self) -> None:
        failures = 0
        delay = 0.0
        if self._quick_deaths > 1:
            delay = min(self.config.restart_backoff_initial * 2 ** (self._quick_deaths - 2),
                        self.config.restart_backoff_max)
        while True:
            if self._stopping.wait(delay):
                return
            try:
                incarnation, _ = self._launch()
            except (DiscoveryError, OSError) as exc:
                failures += 1
                log.warning("restarting the sandbox for %s failed (%d in a row): %s", self.name, failures, exc)
                with self._cond:
                    self.last_error = str(exc)
                    if failures >= self.config.max_start_failures:
                        self.state = FAILED_STATE
                        self._cond.notify_all()
                        log.error("sandbox for %s marked failed after %d failed starts: %s", self.name, failures, exc)
                        return
                delay = min(max(delay * 2, self.config.restart_backoff_initial), self.config.restart_backoff_max)
                continue
            with self._cond:
                if self._stopping.is_set():
                    incarnation.kill_reason = self._stopped_error()
                    incarnation.process.kill_tree()
                else:
                    self._current = incarnation
                    self.restarts += 1
                    self.state = READY
                    self._cond.notify_all()
            self._watch(incarnation)
            return

    def kill(self, incarnation: Incarnation, reason: TaskError) -> None:
        """Kill one incarnation; its waiting calls are answered with `reason`."""
        if incarnation.kill_reason is None:
            incarnation.kill_reason = reason
        incarnation.process.kill_tree()

    def check_memory(self) -> int:
        """Sample the current incarnation's tree; kill it if over the limit. Returns the bytes measured."""
        incarnation = self._current
        if incarnation is None or incarnation.dead.is_set():
            return 0
        rss = incarnation.process.tree_rss()
        incarnation.peak_rss = max(incarnation.peak_rss, rss)
        limit = self.limits.memory_limit_bytes
        if limit is not None and rss > limit:
            log.warning("sandbox for %s uses %.1f MiB, over its %d MiB limit: killing it",
                        self.name, rss / MIB, self.limits.memory_limit_mib)
            self.kill(incarnation, self._memory_error(incarnation.peak_rss, "the supervisor's sampling caught it"))
        return rss

    # --- calls -------------------------------------------------------------------

    def call(self, task_id: str, context_json: bytes, timeout: float | None = None) -> CallResult:
        timeout = timeout if timeout is not None else self.limits.call_timeout
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        with self._cond:
            self._refuse_if_unavailable()
            capacity = self.limits.max_concurrency + self.limits.max_queue
            if self._admitted >= capacity:
                raise OverloadedError(
                    f"package {self.name!r} is overloaded: {self.limits.max_concurrency} calls running and "
                    f"{self.limits.max_queue} waiting; try again later")
            self._admitted += 1
        try:
            while True:
                incarnation = self._acquire(deadline)
                if incarnation is None:
                    return self._result(task_id, started, error=TaskError(
                        TIMEOUT, "TimeoutError", f"task {task_id!r} waited {timeout:g}s for its sandbox and never ran"))
                try:
                    return self._send(incarnation, task_id, context_json, timeout, deadline, started)
                except ChannelClosed:
                    continue  # that sandbox just died and nothing was sent: wait for the next one
                finally:
                    self._release_slot()
        finally:
            with self._cond:
                self._admitted -= 1

    def _release_slot(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _refuse_if_unavailable(self) -> None:
        if self.state == FAILED_STATE:
            raise PackageUnavailableError(f"package {self.name!r} has failed: {self.last_error}")
        if self.state in (STOPPING, STOPPED):
            raise PackageUnavailableError(f"package {self.name!r} is being unloaded")

    def _acquire(self, deadline: float) -> Incarnation | None:
        """Wait for a ready sandbox with a free slot; None when the deadline passes first."""
        with self._cond:
            while True:
                self._refuse_if_unavailable()
                if self.state == READY and self._current is not None and self._current.channel.usable \
                        and self._running < self.limits.max_concurrency:
                    self._running += 1
                    return self._current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _send(self, incarnation: Incarnation, task_id: str, context_json: bytes, timeout: float,
              deadline: float, started: float) -> CallResult:
        future = incarnation.channel.submit(task_id, context_json)
        try:
            response = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except SandboxGone as gone:
            return self._result(task_id, started, error=gone.error)
        except TimeoutError:
            self.kill(incarnation, TaskError(
                CRASHED, "SandboxRestarted",
                f"the sandbox was restarted because a call to {task_id!r} ran past its {timeout:g}s timeout"))
            return self._result(task_id, started, error=TaskError(
                TIMEOUT, "TimeoutError",
                f"task {task_id!r} did not finish within {timeout:g}s; its sandbox was killed and restarted"))
        output = CallOutput(response.output.stdout, response.output.stderr,
                            response.output.stdout_dropped_bytes, response.output.stderr_dropped_bytes)
        if not response.ok:
            return self._result(task_id, started, error=error_from_proto(response.error), output=output)
        return self._result(task_id, started, context=json.loads(response.context_json), output=output)

    def _result(self, task_id: str, started: float, *, context: dict | None = None, error: TaskError | None = None,
                output: CallOutput = CallOutput()) -> CallResult:
        return CallResult(self.name, task_id, Status(FAILED if error else COMPLETED), context, error, output,
                          (time.perf_counter() - started) * 1000.0)

    # --- stopping ----------------------------------------------------------------

    @staticmethod
    def _stopped_error() -> TaskError:
        return TaskError(UNAVAILABLE, "SandboxStopped", "the package was unloaded before the call finished")

    def stop(self, grace: float | None = None) -> None:
        """Let running calls finish within `grace`, then kill the whole tree."""
        grace = self.config.stop_grace if grace is None else grace
        with self._cond:
            if self.state == STOPPED:
                return
            self._stopping.set()
            self.state = STOPPING
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._running == 0, timeout=grace)
            incarnation = self._current
        if incarnation is not None:
            self.kill(incarnation, self._stopped_error())
            incarnation.dead.wait(timeout=30)
        with self._cond:
            # A restart under way sees the stop and kills what it started; wait for that.
            self._cond.wait_for(lambda: not self._restarting, timeout=30)
            self.state = STOPPED
            self._cond.notify_all()


def discover_package(package: ExtractedPackage, import_timeout: float) -> Discovery:
    """Import a package in a throwaway sandbox and return what it declares (for package/inspect)."""
    config = SupervisorConfig(import_timeout=import_timeout, memory_limit_mib=None)
    with tempfile.TemporaryDirectory(prefix="cloaca-discover-") as scratch:
        sandbox = PackageSandbox(package, config.limits_for(None), config, build_runtime_dir(Path(scratch)),
                                 MemoryBackend(None, 0))
        try:
            return sandbox.start()
        finally:
            sandbox.stop(grace=0)
