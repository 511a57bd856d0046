"""One package's sandbox over its lifetime: start, serve calls, die, restart, retire, stop.

A `Sandbox` owns a succession of incarnations (a process, its link, its cgroup).
One asyncio task, the owner, makes every state change; everything else (the
process watchers, the link readers, callers whose call timed out, `stop`) posts
an event to the owner's inbox and lets it decide. See the diagram in
supervisor/sandboxes/__init__.py.

States (`State`): STARTING -> READY <-> RESTARTING -> FAILED; any -> STOPPING -> STOPPED.
An incarnation that dies is replaced with backoff; one retired because a call
timed out (or was abandoned) takes no new calls, a replacement starts at once,
and the old one is killed when the calls it still runs have ended.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import secrets
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import psutil

from cloaca.engine import COMPLETED, FAILED, Status
from cloaca.errors import CRASHED, MEMORY_LIMIT, TIMEOUT, UNAVAILABLE, Frame, TaskError
from sandbox_runtime.protocol import sandbox_pb2 as pb
from supervisor.config import MIB, EffectiveLimits
from supervisor.discovery import Discovery, discovery_from_proto, import_timeout_message
from supervisor.errors import DiscoveryError, ImportTimeoutError, IntegrityError
from supervisor.package import ExtractedPackage
from supervisor.results import CallOutput, CallResult, InvalidContextError, OverloadedError, PackageUnavailableError
from supervisor.sandboxes.cgroups import SandboxCgroup
from supervisor.sandboxes.events import Cause, EventKind, SandboxEvent, SandboxObserver, cause_of, emit
from supervisor.sandboxes.isolation import SandboxPaths, SandboxPlan
from supervisor.sandboxes.launchers import LaunchError, SandboxProcess
from supervisor.sandboxes.link import LinkBroken, PeerMismatch, SandboxLink, check_peer
from sandbox_runtime.markers import READY_MARK
from supervisor.sandboxes.output import OutputPipe
from supervisor.sandboxes.runtime import sandbox_environment
from supervisor.sandboxes.services import SandboxServices

log = logging.getLogger(__name__)

INVALID_CONTEXT = "invalid_context"  # the kind a sandbox answers a bad context with
LINK_OVERHEAD = 16 * MIB  # an answer's output, traceback and framing beyond its context
LINK_BROKEN_GRACE = 2.0  # seconds a broken link's process has to show it died before it is killed


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


def error_from_proto(message: pb.TaskError) -> TaskError:
    frames = tuple(Frame(f.file, f.line, f.function) for f in message.frames)
    return TaskError(message.kind, message.type, message.message, message.traceback, frames)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass(eq=False)
class Incarnation:
    """One sandbox process with its link, cgroup and host directories."""

    number: int
    process: SandboxProcess
    link: SandboxLink
    output: OutputPipe
    plan: SandboxPlan
    cgroup: SandboxCgroup | None
    host_dir: Path
    serving_pid: int = 0
    isolation: dict[str, str] = field(default_factory=dict)
    running: int = 0  # calls holding one of its slots
    retired: bool = False  # takes no new calls; killed once `running` is 0
    kill_reason: TaskError | None = None  # what its waiting calls are told when we kill it
    end_cause: Cause | None = None  # why it ended, where its kill_reason does not say (retired)
    replaced_before_exit: bool = False  # its link broke first: its restart's cause is known at its exit
    peak_memory: int = 0
    memory: int = 0
    started_at: float = field(default_factory=time.monotonic)
    cleaned: bool = False

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def own_pid_namespace(self) -> bool:
        return bool(self.plan.confinement.get("namespaces"))

    def kill(self, reason: TaskError | None = None) -> None:
        """Kill the incarnation and everything it started."""
        if reason is not None and self.kill_reason is None:
            self.kill_reason = reason
        if not self.own_pid_namespace:
            # No namespace takes its descendants along: kill them first, while they are still
            # under it (it is their subreaper), then it.
            _kill_descendants(self.serving_pid or self.process.pid)
        self.process.kill()

    def sample_memory(self) -> int:
        """The sandbox's own memory: its cgroup's usage, else the USS of its processes."""
        value = self.cgroup.memory_bytes() if self.cgroup is not None and self.cgroup.has_memory else None
        if value is None:
            value = _tree_uss(self.serving_pid or self.process.pid)
        self.memory = value
        self.peak_memory = max(self.peak_memory, value)
        return value


def _descendants(pid: int) -> list[int]:
    """Every descendant of `pid`, found through /proc/PID/task/*/children (no walk of all of /proc)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    children = [int(child) for child in handle.read().split()]
                found.extend(children)
                stack.extend(children)
        except OSError:
            pass
    return found


def _kill_descendants(pid: int) -> None:
    for _ in range(10):  # a descendant may fork while we kill: go again until none is left
        victims = _descendants(pid)
        if not victims:
            return
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _tree_uss(pid: int) -> int:
    """USS of a process and its descendants (what they do not share with the zygote or each other)."""
    total = 0
    for member in (pid, *_descendants(pid)):
        try:
            total += psutil.Process(member).memory_full_info().uss
        except psutil.Error:
            pass
    return total


class Sandbox:
    """A package's sandbox: the owner of its incarnations' lifecycle, and the admission of its calls."""

    def __init__(self, key: str, package: ExtractedPackage, limits: EffectiveLimits, services: SandboxServices,
                 verify: Callable[[], Awaitable[None]] | None = None,
                 secrets: Callable[[list[str]], dict[str, dict[str, str]]] | None = None,
                 variables: Callable[[], dict[str, str]] | None = None, tenant: str | None = None,
                 observer: SandboxObserver | None = None) -> None:
        self.key = key
        self.tenant = tenant
        self.observer = observer  # gets every lifecycle event and what the sandbox writes outside calls
        self.variables = variables  # the tenant's CLOACINA_VAR_*, read again at every start
        self.verify = verify  # checks the package's files before every restart; raises IntegrityError
        self.secrets = secrets  # the declared secrets the operator supplied, for this package's tenant
        self.package = package
        self.limits = limits
        self.services = services
        self.config = services.config
        self.state = State.STARTING
        self.last_error: str | None = None
        self.restarts = 0
        self.restart_causes: Counter[str] = Counter()
        self._past_peak_memory = 0  # the highest peak of incarnations already gone
        self.discovery: Discovery | None = None
        self.current: Incarnation | None = None
        self.incarnations: set[Incarnation] = set()  # every live one: current and retired
        self._count = 0
        self._admitted = 0
        self._waiters: list[asyncio.Future[None]] = []  # callers waiting for a slot or a state change
        self._inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self._owner: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._start_failures = 0
        self._quick_deaths = 0
        self._stop_deadline: asyncio.TimerHandle | None = None
        self._stopped = asyncio.Event()
        self._first_start: asyncio.Task[tuple[Incarnation, Discovery]] | None = None
        self._tasks_async: dict[str, bool] = {}  # task id -> is_async, from discovery

    # --- reading -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def pid(self) -> int | None:
        current = self.current
        return (current.serving_pid or current.process.pid) if current is not None else None

    @property
    def isolation(self) -> dict[str, str]:
        current = self.current
        return dict(current.isolation) if current is not None else {}

    @property
    def memory_bytes(self) -> int:
        return sum(incarnation.memory for incarnation in self.incarnations)

    @property
    def memory_peak_bytes(self) -> int:
        return max([self._past_peak_memory, *(incarnation.peak_memory for incarnation in self.incarnations)])

    @property
    def calls_admitted(self) -> int:
        """Calls running or waiting for a slot."""
        return self._admitted

    @property
    def calls_running(self) -> int:
        return sum(incarnation.running for incarnation in self.incarnations)

    def _emit(self, kind: EventKind, incarnation: Incarnation | None = None, **fields: Any) -> None:
        emit(SandboxEvent(kind, self.key, self.tenant, self.package.version,
                          incarnation.number if incarnation is not None else self._count,
                          (incarnation.serving_pid or incarnation.process.pid) if incarnation is not None else 0,
                          **fields), self.observer)

    # --- starting ------------------------------------------------------------------

    async def start(self) -> Discovery:
        """Start the first incarnation, then the owner; raises DiscoveryError or ImportTimeoutError."""
        self._first_start = asyncio.get_running_loop().create_task(self._launch())
        try:
            incarnation, discovery = await self._first_start
        except asyncio.CancelledError:
            if self.state is State.STOPPED:
                raise PackageUnavailableError(f"package {self.key!r} was stopped while it started") from None
            raise
        self.discovery = discovery
        self._tasks_async = {task.id: task.is_async for task in discovery.tasks}
        self.current = incarnation
        self.state = State.READY
        self._owner = asyncio.get_running_loop().create_task(self._own(), name=f"sandbox-owner-{self.key}")
        return discovery

    async def _launch(self) -> tuple[Incarnation, Discovery]:
        services = self.services
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.import_timeout
        began = loop.time()
        self._count += 1
        number = self._count
        host_dir = Path(_mkdtemp(services.run_dir, "s"))
        socket_dir, mountpoint = host_dir / "s", host_dir / "r"
        work = self.package.root.parent / f"{self.package.root.name}.run"
        home, tmp = work / "home", work / "tmp"
        cgroup: SandboxCgroup | None = None
        plan: SandboxPlan | None = None
        observer = self.observer
        output = OutputPipe(f"{self.key} #{number}",
                            sink=(lambda data: observer.output(number, data)) if observer is not None else None)
        process: SandboxProcess | None = None
        link: SandboxLink | None = None
        try:
            for directory in (socket_dir, mountpoint, home, tmp):
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The sandbox's uid reads the package; the staging dir around it (0700) hides it from the host.
            os.chmod(self.package.root, 0o755)
            if services.cgroups.memory or services.cgroups.pids:
                cgroup = services.cgroups.create(self.name, self.limits.memory_limit_bytes,
                                                 self.limits.max_processes)
            paths = SandboxPaths(self.package.root, [Path(p) for p in self.package.import_paths], socket_dir,
                                 mountpoint, home, tmp)
            plan = services.isolation.plan_for(
                paths, network=self.limits.network, scratch_bytes=self.limits.scratch_mib * MIB,
                max_processes=self.limits.max_processes, cgroup_procs=cgroup.procs_files if cgroup else [],
                env=sandbox_environment(self.variables() if self.variables is not None else None))
            if plan.uid is not None:
                for directory in (socket_dir, home, tmp):
                    os.chown(directory, plan.uid, plan.uid)
            token = secrets.token_hex(16)
            message_limit = self.config.max_context_bytes + LINK_OVERHEAD
            spec = {
                "entry_module": self.package.entry_module, "package_paths": plan.package_paths,
                "package_name": self.package.name, "workflow_name": self.package.workflow_name,
                "socket_path": plan.socket_path, "token": token, "max_concurrency": self.limits.max_concurrency,
                "output_limit": self.config.output_limit_bytes, "max_context_bytes": self.config.max_context_bytes,
                "env": plan.env, "cwd": plan.cwd, "hide_modules": self.package_modules(),
                "executable": services.isolation.runtime.executable, "confinement": plan.confinement,
            }
            listening = output.expect(READY_MARK)
            process = await services.launcher.launch(spec, output.write_fd)
            output.close_write_end()
            # In its own mount namespace the socket is on the sandbox's own tmpfs, seen through its root.
            socket_path = f"/proc/{process.pid}/root{plan.socket_path}" if plan.in_own_root else plan.socket_path
            link = SandboxLink(socket_path, token, message_limit, on_broken=lambda: None)
            if not await _first_of(listening, process.wait(), deadline) is listening:
                raise await self._start_failure(process, output)
            serving_pid = await check_peer(socket_path, process.pid,
                                           plan.uid if plan.uid is not None else os.geteuid(), deadline)
            process.serving(serving_pid)
            try:
                answer = await link.discover(timeout=max(0.001, deadline - loop.time()))
            except Exception:  # noqa: BLE001 - grpc's errors: the process's fate says more
                raise await self._start_failure(process, output) from None
            if not answer.ok:
                error = error_from_proto(answer.error)
                raise DiscoveryError(f"importing the entry module failed: {error}", error.traceback)
            discovery = discovery_from_proto(answer.discovery)
            if discovery.secrets:
                supplied = self.secrets(discovery.secrets) if self.secrets is not None else {}
                await link.provide_secrets(supplied, list(discovery.secrets),
                                           timeout=max(1.0, deadline - loop.time()))
            link.open_calls()
        except BaseException as exc:
            if process is not None:
                process.kill()
                await process.wait()
                process.cleanup()
            if link is not None:
                await link.close()
            await output.drained(0.5)
            output.close()
            if cgroup is not None:
                await services.in_thread(cgroup.remove)
            if plan is not None:
                services.isolation.release(plan)
            await services.in_thread(shutil.rmtree, host_dir, True)
            if isinstance(exc, (PeerMismatch, LaunchError)):
                raise DiscoveryError(f"the sandbox could not start: {exc}") from None
            if isinstance(exc, OSError):
                raise DiscoveryError(f"the sandbox could not start: {exc}") from None
            raise
        incarnation = Incarnation(number, process, link, output, plan, cgroup, host_dir, serving_pid,
                                  services.isolation.report(plan))
        link._on_broken = lambda: self._post("broken", incarnation)
        self.incarnations.add(incarnation)
        loop.create_task(self._watch(incarnation))
        self._emit(EventKind.STARTED, incarnation, seconds=loop.time() - began)
        return incarnation, discovery

    def package_modules(self) -> list[str]:
        """Top-level modules the package provides itself (the runtime's copies are hidden from it)."""
        from supervisor.package import top_level_modules

        names: set[str] = set()
        for path in self.package.import_paths:
            try:
                names |= top_level_modules(Path(path))
            except OSError:
                pass
        return sorted(names)

    async def _start_failure(self, process: SandboxProcess, output: OutputPipe) -> DiscoveryError:
        returncode = process.poll()
        if returncode is None:
            return ImportTimeoutError(import_timeout_message(self.limits.import_timeout))
        await output.drained(1.0)
        return DiscoveryError(f"the sandbox {describe_exit(returncode)} before it was ready", output.tail())

    async def _watch(self, incarnation: Incarnation) -> None:
        await incarnation.process.wait()
        self._post("exited", incarnation)

    # --- the owner -----------------------------------------------------------------

    def _post(self, *event: Any) -> None:
        self._inbox.put_nowait(event)

    async def _own(self) -> None:
        """Every state change happens here, one event at a time."""
        while self.state is not State.STOPPED:
            event = await self._inbox.get()
            kind, *args = event
            try:
                await getattr(self, f"_on_{kind}")(*args)
            except Exception:  # noqa: BLE001 - the owner must outlive any one event
                log.exception("sandbox %s: handling %s failed", self.key, kind)
            self._wake()

    async def _on_exited(self, incarnation: Incarnation) -> None:
        returncode = incarnation.process.poll()
        assert returncode is not None
        error = self._death_error(incarnation, returncode)
        incarnation.link.fail_all(SandboxGone(error))
        was_current = incarnation is self.current
        if was_current:
            self.current = None
        cause = incarnation.end_cause or cause_of(error)
        self._emit(EventKind.EXITED, incarnation, cause=cause.value, detail=describe_exit(returncode),
                   memory_peak_bytes=incarnation.peak_memory)
        if self.state is not State.STOPPING:
            if not incarnation.retired:
                if self.state is not State.FAILED:  # why it failed for good says more than this death
                    self.last_error = error.message
            if was_current:
                self._replace_after_death(incarnation, cause)  # it starts while the dead one is cleared
            elif incarnation.replaced_before_exit:
                self._note_restart(cause)
        await self._cleanup(incarnation)
        if self.state is State.STOPPING:
            self._maybe_stopped()

    async def _on_broken(self, incarnation: Incarnation) -> None:
        """The link ended. A dying process closes it first (its exit is seen once its memory is torn
        down, ~0.1 ms per MB): a replacement starts now, and the old process has a moment to show
        it died (and why) before it is killed for a broken link."""
        if not incarnation.alive or incarnation.kill_reason is not None:
            return
        if incarnation is self.current and self.state is not State.STOPPING:
            self.current = None
            incarnation.replaced_before_exit = True  # why it died is known once its exit is seen
            self._replace_after_death(incarnation, None)
        asyncio.get_running_loop().call_later(LINK_BROKEN_GRACE, self._post, "link_dead", incarnation)

    def _replace_after_death(self, incarnation: Incarnation, cause: Cause | None) -> None:
        """Start the next incarnation, after a backoff that grows while incarnations die young."""
        self._quick_deaths = self._quick_deaths + 1 if incarnation.uptime < self.config.stable_after else 0
        delay = 0.0
        if self._quick_deaths > 1:
            delay = min(self.config.restart_backoff_initial * 2 ** (self._quick_deaths - 2),
                        self.config.restart_backoff_max)
        if cause is not None:
            self._note_restart(cause, delay)
        self._begin_restart(delay)

    async def _on_link_dead(self, incarnation: Incarnation) -> None:
        if incarnation.alive and incarnation.kill_reason is None:
            reason = incarnation.link.broken or "the link broke"
            self._emit(EventKind.KILLED, incarnation, cause=Cause.LINK_BROKEN.value, detail=reason)
            incarnation.kill(TaskError(CRASHED, "SandboxLinkBroken",
                                       f"the link to the sandbox broke ({reason}); it was replaced"))

    async def _on_retire(self, incarnation: Incarnation, reason: TaskError, cause: Cause) -> None:
        if incarnation.retired or not incarnation.alive:
            return
        incarnation.retired = True
        incarnation.kill_reason = reason
        incarnation.end_cause = cause
        if incarnation is self.current and self.state is not State.STOPPING:
            self.current = None
            self._emit(EventKind.RETIRED, incarnation, cause=cause.value, detail=reason.message)
            self._note_restart(cause)
            self._begin_restart(0.0)
        await self._on_idle(incarnation)

    async def _on_idle(self, incarnation: Incarnation) -> None:
        if incarnation.retired and incarnation.running == 0 and incarnation.alive:
            incarnation.kill()

    async def _on_kill(self, incarnation: Incarnation, reason: TaskError) -> None:
        incarnation.kill(reason)

    def _note_restart(self, cause: Cause, delay: float = 0.0) -> None:
        """A replacement starts (or started) because of `cause`: counted, and an event."""
        self.restart_causes[cause.value] += 1
        self._emit(EventKind.RESTARTING, cause=cause.value, seconds=delay)

    def _begin_restart(self, delay: float) -> None:
        self.state = State.RESTARTING
        if self._starting is None or self._starting.done():
            self._starting = asyncio.get_running_loop().create_task(self._restart(delay))
            self._starting.add_done_callback(lambda _: self._post("start_done"))

    async def _restart(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        try:
            if self.verify is not None:
                await self.verify()
            incarnation, _ = await self._launch()
        except IntegrityError as exc:
            self._post("integrity_failed", exc)
        except Exception as exc:  # noqa: BLE001 - any failure to start is a failed start
            self._post("start_failed", exc)
        else:
            self._post("started", incarnation)

    async def _on_start_done(self) -> None:
        if self.state is State.STOPPING:
            self._maybe_stopped()

    async def _on_integrity_failed(self, exc: Exception) -> None:
        self.last_error = str(exc)
        if self.state is State.STOPPING:
            self._maybe_stopped()
            return
        self.state = State.FAILED
        self._emit(EventKind.FAILED, cause=Cause.INTEGRITY_FAILED.value, detail=str(exc))

    async def _on_started(self, incarnation: Incarnation) -> None:
        self._start_failures = 0
        if self.state is State.STOPPING:
            incarnation.kill(_stopped_error())
            return
        self.current = incarnation
        self.restarts += 1
        self.state = State.READY

    async def _on_start_failed(self, exc: Exception) -> None:
        self._start_failures += 1
        self.last_error = str(exc)
        if self.state is State.STOPPING:
            self._maybe_stopped()
            return
        self._emit(EventKind.START_FAILED, cause=Cause.START_FAILED.value,
                   detail=f"{self._start_failures} in a row: {exc}")
        if self._start_failures >= self.config.max_start_failures:
            self.state = State.FAILED
            self._emit(EventKind.FAILED, cause=Cause.START_FAILED.value,
                       detail=f"{self._start_failures} failed starts in a row; the last: {exc}")
            return
        delay = min(self.config.restart_backoff_initial * 2 ** (self._start_failures - 1),
                    self.config.restart_backoff_max)
        self._begin_restart(delay)

    def _death_error(self, incarnation: Incarnation, returncode: int) -> TaskError:
        if incarnation.kill_reason is not None:
            return incarnation.kill_reason
        if incarnation.cgroup is not None and incarnation.cgroup.oom_kills() > 0:
            peak = incarnation.cgroup.peak_bytes() or incarnation.peak_memory
            return self.memory_error(peak, "the kernel's OOM killer stopped it at its hard limit")
        return TaskError(CRASHED, "SandboxCrashed", f"the sandbox {describe_exit(returncode)} while the call was running")

    def memory_error(self, peak: int, how: str) -> TaskError:
        return TaskError(MEMORY_LIMIT, "MemoryLimitExceeded",
                         f"the sandbox exceeded its memory limit of {self.limits.memory_limit_mib} MiB (peak measured "
                         f"{peak / MIB:.1f} MiB); {how}, and it was restarted")

    async def _cleanup(self, incarnation: Incarnation) -> None:
        if incarnation.cleaned:
            return
        incarnation.cleaned = True
        self._past_peak_memory = max(self._past_peak_memory, incarnation.peak_memory)
        self.incarnations.discard(incarnation)
        await incarnation.link.close()
        await incarnation.output.drained(0.2)
        incarnation.output.close()
        incarnation.process.cleanup()
        if incarnation.cgroup is not None:
            await self.services.in_thread(incarnation.cgroup.remove)
        self.services.isolation.release(incarnation.plan)
        await self.services.in_thread(shutil.rmtree, incarnation.host_dir, True)

    # --- memory --------------------------------------------------------------------

    def check_memory(self) -> None:
        """Sample every incarnation; one over its limit (where no cgroup enforces it) is killed."""
        limit = self.limits.memory_limit_bytes
        for incarnation in list(self.incarnations):
            if not incarnation.alive or incarnation.kill_reason is not None:
                continue
            used = incarnation.sample_memory()
            if limit is not None and used > limit and (incarnation.cgroup is None or not incarnation.cgroup.has_memory):
                self._emit(EventKind.KILLED, incarnation, cause=Cause.MEMORY_LIMIT.value,
                           detail=f"it used {used / MIB:.1f} MiB, over its {self.limits.memory_limit_mib} MiB limit",
                           memory_peak_bytes=incarnation.peak_memory)
                self._post("kill", incarnation, self.memory_error(incarnation.peak_memory,
                                                                  "the supervisor's sampling caught it"))

    # --- calls ---------------------------------------------------------------------

    async def call(self, task_id: str, context_json: bytes, timeout: float | None = None) -> CallResult:
        """Run one call. Waiting for a slot and running count against the same deadline."""
        return await self._call(task_id, context_json, timeout, "")

    async def poll(self, trigger: str, timeout: float | None = None) -> CallResult:
        """Call a poll trigger's function once, as a call: the same slots, deadline and answers.

        On success the result's context is {"fire": bool, "context": {...}}.
        """
        return await self._call("", b"", timeout, trigger)

    async def _call(self, task_id: str, context_json: bytes, timeout: float | None, trigger: str) -> CallResult:
        loop = asyncio.get_running_loop()
        timeout = self.limits.call_timeout if timeout is None else min(timeout, self.limits.call_timeout)
        started = time.perf_counter()
        deadline = loop.time() + timeout
        self._refuse_if_unavailable()
        if self._admitted >= self.limits.max_concurrency + self.limits.max_queue:
            raise OverloadedError(
                f"package {self.key!r} is overloaded: {self.limits.max_concurrency} calls running and "
                f"{self.limits.max_queue} waiting; try again later")
        self._admitted += 1
        what = f"trigger {trigger!r}" if trigger else f"task {task_id!r}"
        try:
            while True:
                incarnation = await self._acquire(deadline)
                if incarnation is None:
                    return self._result(task_id, started, error=TaskError(
                        TIMEOUT, "TimeoutError", f"{what} waited {timeout:g}s for its sandbox and never ran"))
                slot = CallSlot(self, incarnation)
                try:
                    return await self._send(incarnation, slot, task_id, context_json, timeout, deadline, started,
                                            trigger)
                except LinkBroken:
                    continue  # never sent: wait for the next incarnation
                finally:
                    slot.close()
        finally:
            self._admitted -= 1

    def _refuse_if_unavailable(self) -> None:
        if self.state is State.FAILED:
            raise PackageUnavailableError(f"package {self.key!r} has failed: {self.last_error}")
        if self.state in (State.STOPPING, State.STOPPED):
            raise PackageUnavailableError(f"package {self.key!r} is being unloaded")

    async def _acquire(self, deadline: float) -> Incarnation | None:
        """A ready incarnation with a free slot (taken), or None once the deadline passes."""
        loop = asyncio.get_running_loop()
        while True:
            self._refuse_if_unavailable()
            current = self.current
            if self.state is State.READY and current is not None and not current.retired \
                    and current.link.usable and current.running < self.limits.max_concurrency:
                current.running += 1
                return current
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                return None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _release(self, incarnation: Incarnation) -> None:
        incarnation.running -= 1
        if incarnation.retired and incarnation.running == 0:
            self._post("idle", incarnation)
        if self._waiters:
            self._wake()

    async def _send(self, incarnation: Incarnation, slot: "CallSlot", task_id: str, context_json: bytes,
                    timeout: float, deadline: float, started: float, trigger: str) -> CallResult:
        call_id, future = await incarnation.link.call(task_id, context_json, on_progress=slot.progress,
                                                      trigger=trigger)
        slot.call_id = call_id
        what = f"trigger {trigger!r}" if trigger else f"task {task_id!r}"
        try:
            async with asyncio.timeout_at(deadline):
                response = await asyncio.shield(future)
        except SandboxGone as gone:
            return self._result(task_id, started, error=gone.error)
        except asyncio.TimeoutError:
            self._abandon(incarnation, task_id, call_id, future, TaskError(
                CRASHED, "SandboxRestarted",
                f"the sandbox was replaced because a call to {what} ran past its {timeout:g}s timeout"),
                Cause.TIMEOUT)
            return self._result(task_id, started, error=TaskError(
                TIMEOUT, "TimeoutError", f"{what} did not finish within {timeout:g}s; its sandbox was replaced"))
        except asyncio.CancelledError:
            self._abandon(incarnation, task_id, call_id, future, TaskError(
                CRASHED, "SandboxRestarted", f"the sandbox was replaced because a call to {what} was abandoned"),
                Cause.ABANDONED)
            raise
        output = CallOutput(response.output.stdout, response.output.stderr,
                            response.output.stdout_dropped_bytes, response.output.stderr_dropped_bytes)
        if not response.ok:
            error = error_from_proto(response.error)
            if error.kind == INVALID_CONTEXT:
                raise InvalidContextError(error.message)
            return self._result(task_id, started, error=error, output=output)
        return self._result(task_id, started, context_json=response.context_json, output=output)

    def _abandon(self, incarnation: Incarnation, task_id: str, call_id: int,
                 future: asyncio.Future[pb.CallResponse], reason: TaskError, cause: Cause) -> None:
        """The caller stopped waiting. Cancel the call in the sandbox where the task can be cancelled;
        otherwise (or if it does not stop in time) retire the incarnation."""
        incarnation.link.cancel(call_id)
        # Whatever the future ends with now, nobody waits for it: take its outcome so asyncio does not warn.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        if not self._tasks_async.get(task_id, False):
            self._post("retire", incarnation, reason, cause)
            return

        async def await_cancel() -> None:
            try:
                await asyncio.wait_for(asyncio.shield(future), self.config.cancel_grace)
            except asyncio.TimeoutError:
                self._post("retire", incarnation, reason, cause)
            except Exception:  # noqa: BLE001 - it died or broke: its owner already knows
                pass

        incarnation.running += 1  # its thread is busy until the cancel lands
        task = asyncio.get_running_loop().create_task(await_cancel())
        task.add_done_callback(lambda _: self._release(incarnation))

    def _result(self, task_id: str, started: float, *, context_json: bytes | None = None,
                error: TaskError | None = None, output: CallOutput = CallOutput()) -> CallResult:
        return CallResult(self.key, task_id, Status(FAILED if error else COMPLETED), context_json, error, output,
                          (time.perf_counter() - started) * 1000.0)

    # --- stopping ------------------------------------------------------------------

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let running ones finish within `grace`, then kill every incarnation."""
        grace = self.config.stop_grace if grace is None else grace
        if self._owner is None:
            self.state = State.STOPPED
            if self._first_start is not None and not self._first_start.done():
                self._first_start.cancel()
            return
        self._post("stop", grace)
        await self._stopped.wait()

    async def _on_stop(self, grace: float) -> None:
        if self.state is State.STOPPED:
            return
        if self.state is State.STOPPING:
            # Asked again, sooner (a shutdown overtaking a replacement's drain): the sooner deadline wins.
            assert self._stop_deadline is not None
            if self._stop_deadline.when() > asyncio.get_running_loop().time() + grace:
                self._stop_deadline.cancel()
                self._stop_deadline = asyncio.get_running_loop().call_later(grace, self._post, "stop_now")
            return
        self.state = State.STOPPING
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        for incarnation in self.incarnations:
            incarnation.retired = True
        self._stop_deadline = asyncio.get_running_loop().call_later(grace, self._post, "stop_now")
        self._kill_idle()
        self._maybe_stopped()

    def _kill_idle(self) -> None:
        for incarnation in self.incarnations:
            if incarnation.running == 0:
                incarnation.kill(_stopped_error())

    async def _on_stop_now(self) -> None:
        for incarnation in self.incarnations:
            incarnation.kill(_stopped_error())
        self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if self.state is State.STOPPING and not self.incarnations \
                and (self._starting is None or self._starting.done()):
            if self._stop_deadline is not None:
                self._stop_deadline.cancel()
            self.state = State.STOPPED
            self._emit(EventKind.STOPPED, memory_peak_bytes=self.memory_peak_bytes)
            self._stopped.set()


class CallSlot:
    """The slot one call holds on its incarnation; a deferred task gives it back and takes one again.

    DEFERRED: the slot is released (another call may run meanwhile). WANTS_SLOT:
    the task's condition holds; once the incarnation has a free slot the call takes
    it and the sandbox is told to go on.
    """

    def __init__(self, sandbox: "Sandbox", incarnation: Incarnation) -> None:
        self.sandbox = sandbox
        self.incarnation = incarnation
        self.held = True
        self.call_id = 0
        self.closed = False

    def close(self) -> None:
        """The call is over (answered or abandoned): give the slot back for good."""
        self.closed = True
        self.release()

    def release(self) -> None:
        if self.held:
            self.held = False
            self.sandbox._release(self.incarnation)

    def progress(self, step: int) -> None:
        if step == pb.DEFERRED:
            self.release()
        elif step == pb.WANTS_SLOT and not self.held:
            asyncio.get_running_loop().create_task(self._take_again())

    async def _take_again(self) -> None:
        incarnation, limit = self.incarnation, self.sandbox.limits.max_concurrency
        loop = asyncio.get_running_loop()
        while incarnation.running >= limit and incarnation.alive and not incarnation.link.broken and not self.closed:
            waiter = loop.create_future()
            self.sandbox._waiters.append(waiter)
            await waiter
        if incarnation.alive and not incarnation.link.broken and not self.closed:
            incarnation.running += 1
            self.held = True
            incarnation.link.resume(self.call_id)


class SandboxGone(Exception):
    """The incarnation died or was killed before answering; `error` says how."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


async def _first_of(first: asyncio.Future[Any], second: Awaitable[Any], deadline: float) -> object:
    """Whichever of two awaitables finishes first (the other is cancelled); None at the deadline."""
    other = asyncio.ensure_future(second)
    try:
        done, _ = await asyncio.wait({first, other}, timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        other.cancel()
    if first in done:
        return first
    return other if other in done else None


def _stopped_error() -> TaskError:
    return TaskError(UNAVAILABLE, "SandboxStopped", "the package was unloaded before the call finished")


def _mkdtemp(parent: Path, prefix: str) -> str:
    import tempfile

    parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=parent)
