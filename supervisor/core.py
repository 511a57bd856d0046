"""The supervisor's core: loaded packages by name, each with its sandbox; written once, as async.

    async with AsyncSupervisor(SupervisorConfig(call_timeout=30)) as supervisor:
        info = await supervisor.load("data-pipeline-1.0.0.cloacina")
        result = await supervisor.call("data-pipeline", "extract", {"day": "2026-11-22"})

Everything runs on the event loop that started it: no thread per call, no work
on the loop's default executor. Blocking work (extracting archives, hashing,
removing trees) goes to a small private executor. `supervisor.facade.Supervisor`
is the synchronous face of this class for programs without a loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import orjson

from cloaca.engine import WorkflowRun, run_workflow
from cloaca.errors import UNAVAILABLE, TaskError, TaskFailed
from supervisor.archive import ExtractionLimits
from supervisor.config import PackageLimits, SupervisorConfig
from supervisor.contexts import ContextLike, encode_context
from supervisor.discovery import DiscoveredTask, Discovery
from supervisor.errors import IntegrityError
from supervisor.fingerprint import tree_fingerprint
from supervisor.observing import SandboxFigures, SupervisorObserver
from supervisor.package import ExtractedPackage, check_discovery, extract_package
from supervisor.package_log import PackageLog
from supervisor.results import (
    CallRejected,
    CallResult,
    InvalidContextError,
    PackageInfo,
    PackageUnavailableError,
    UnknownPackageError,
    UnknownTaskError,
)
from supervisor.sandboxes.events import SandboxEvent
from supervisor.sandboxes.lifecycle import Sandbox, State
from supervisor.secrets import SecretStore, load_secrets
from supervisor.variables import Variables
from supervisor.sandboxes.services import SandboxServices, open_services
from supervisor.workflows import workflow_plan

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class LoadedPackage:
    key: str
    namespace: str | None
    package: ExtractedPackage
    sandbox: Sandbox
    discovery: Discovery


class _PackageWatch:
    """One sandbox's observer: its events and output go to its package's log, its events to the core's observer."""

    def __init__(self, log: PackageLog, version: str, observer: SupervisorObserver | None) -> None:
        self.log = log
        self.version = version
        self.observer = observer

    def event(self, event: SandboxEvent) -> None:
        self.log.add_event(event)
        if self.observer is not None:
            self.observer.sandbox_event(event)

    def output(self, incarnation: int, data: bytes) -> None:
        self.log.add_output(self.version, incarnation, data)


def package_key(name: str, namespace: str | None) -> str:
    """How a package is addressed: its name, or "namespace/name" inside a namespace (a tenant)."""
    return f"{namespace}/{name}" if namespace else name


class AsyncSupervisor:
    def __init__(self, config: SupervisorConfig | None = None,
                 extraction_limits: ExtractionLimits = ExtractionLimits(),
                 observer: SupervisorObserver | None = None) -> None:
        self.config = config or SupervisorConfig()
        self.observer = observer  # told of loads, unloads, sandbox events and calls (the metrics)
        self.extraction_limits = extraction_limits
        self._owns_work_dir = self.config.work_dir is None
        self.work_dir: Path | None = None
        self.services: SandboxServices | None = None
        self._packages: dict[str, LoadedPackage] = {}
        self._logs: dict[str, PackageLog] = {}  # each loaded package's recent output and events
        self._retiring: dict[asyncio.Task[None], Sandbox] = {}  # replaced packages, draining
        self._loading: set[Sandbox] = set()  # sandboxes of loads under way, stopped by close()
        self._loads_in_flight = 0
        self._loads_done = asyncio.Event()
        self._blocking = ThreadPoolExecutor(max_workers=4, thread_name_prefix="supervisor-io")
        self._monitor: asyncio.Task[None] | None = None
        self.secrets = SecretStore()
        self.variables = Variables()
        self._started: asyncio.Future[None] | None = None
        self._closed = False

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Make the work dir, detect cgroups, start the zygote and probe isolation. Idempotent."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._start()
            except BaseException as exc:
                self._started.set_exception(exc)
                self._started.exception()  # raised here; later start() calls raise it again
                raise
            self._started.set_result(None)
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        self.secrets = load_secrets(self.config.secrets_file)  # SecretsFileError names what is wrong
        self.variables = Variables.load(self.config.vars_file)  # VariablesFileError likewise
        self.work_dir = Path(tempfile.mkdtemp(prefix="cloaca-sandbox-")) if self._owns_work_dir \
            else Path(self.config.work_dir)  # type: ignore[arg-type]
        self.work_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o711)
        self.services = await open_services(self.config, self.work_dir)
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_memory(), name="memory-monitor")

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._blocking, function, *args)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this supervisor has been closed")

    @property
    def staging_dir(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "packages"

    # --- packages ------------------------------------------------------------------

    async def load(self, archive: bytes | str | os.PathLike[str], limits: PackageLimits | None = None, *,
                   namespace: str | None = None,
                   check: Callable[[ExtractedPackage], Awaitable[None]] | None = None) -> PackageInfo:
        """Check, extract and start a package; replaces a loaded package of the same name.

        The package is addressed as its name, or "namespace/name" when a namespace
        (a tenant) is given. `check` is awaited with the extracted package before its
        sandbox starts, and may refuse it by raising. Raises a PackageError
        (supervisor.errors) naming the check that failed, leaving nothing behind. A
        replaced package's sandbox drains in the background: calls it is running
        finish there, new ones go to the new one.
        """
        self._check_open()
        await self.start()
        assert self.services is not None
        self._loads_in_flight += 1
        self._loads_done.clear()
        try:
            return await self._load(archive, limits, namespace, check)
        finally:
            self._loads_in_flight -= 1
            if not self._loads_in_flight:
                self._loads_done.set()

    async def _load(self, archive: bytes | str | os.PathLike[str], limits: PackageLimits | None,
                    namespace: str | None,
                    check: Callable[[ExtractedPackage], Awaitable[None]] | None) -> PackageInfo:
        assert self.services is not None
        package = await self._in_thread(extract_package, archive, self.staging_dir, self.extraction_limits)
        if self._closed:
            await self._in_thread(package.remove)
            self._check_open()
        key = package_key(package.name, namespace)
        package_log = self._logs.get(key) or PackageLog()  # a replacement writes on in the same log
        sandbox = Sandbox(key, package, self.config.limits_for(limits), self.services,
                          verify=lambda: self._verify(package),
                          secrets=lambda names: self._secrets_for(key, namespace, names),
                          variables=lambda: self.variables.environment(namespace), tenant=namespace,
                          observer=_PackageWatch(package_log, package.version, self.observer))
        self._loading.add(sandbox)
        try:
            if check is not None:
                await check(package)
            discovery = await sandbox.start()
            check_discovery(package, discovery)
            self._check_open()  # closed while it started: it must not outlive close()
        except BaseException:
            await self._discard(package, sandbox, grace=0)
            raise
        finally:
            self._loading.discard(sandbox)
        loaded = LoadedPackage(key, namespace, package, sandbox, discovery)
        previous = self._packages.get(key)
        self._packages[key] = loaded
        self._logs[key] = package_log
        if self.observer is not None:
            self.observer.package_loaded(key, namespace, package.name, [task.id for task in discovery.tasks])
        log.info("loaded %s %s: %d tasks", key, package.version, len(discovery.tasks))
        if previous is not None:
            log.info("replaced %s %s; its sandbox drains", key, previous.package.version)
            self._retire_in_background(previous, previous.sandbox.limits.call_timeout)
        return self.info(loaded)

    def _secrets_for(self, key: str, namespace: str | None, names: list[str]) -> dict[str, dict[str, str]]:
        """The declared secrets the operator supplied for this package's tenant; no other tenant's."""
        store = self.secrets.for_tenant(namespace)
        missing = store.missing(names)
        if missing:
            log.warning("package %s declares secrets the secrets file does not supply for its tenant: %s",
                        key, ", ".join(missing))
        return store.for_names(names)

    async def _verify(self, package: ExtractedPackage) -> None:
        """Before a restart: the extracted tree must still hash to what was accepted."""
        actual = await self._in_thread(tree_fingerprint, package.root)
        if actual != package.fingerprint:
            raise IntegrityError(f"the files of {package.name} {package.version} changed on disk since it was "
                                 f"loaded ({actual}, not {package.fingerprint}); it will not run again until "
                                 "it is loaded anew")

    def _retire_in_background(self, loaded: LoadedPackage, grace: float) -> None:
        task = asyncio.get_running_loop().create_task(self._discard(loaded.package, loaded.sandbox, grace))
        self._retiring[task] = loaded.sandbox
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def unload(self, name: str) -> None:
        loaded = self._packages.pop(name, None)
        if loaded is None:
            raise UnknownPackageError(self._unknown_package_message(name))
        package_log = self._logs.pop(name, None)
        await self._discard(loaded.package, loaded.sandbox)
        if package_log is not None:
            package_log.close()
        if self.observer is not None:
            self.observer.package_unloaded(name)
        log.info("unloaded %s %s", name, loaded.package.version)

    async def _discard(self, package: ExtractedPackage, sandbox: Sandbox, grace: float | None = None) -> None:
        """Stop the sandbox (every incarnation) and remove everything the package had on disk."""
        await sandbox.stop(grace)
        await self._in_thread(package.remove)
        await self._in_thread(shutil.rmtree, package.root.parent / f"{package.root.name}.run", True)

    def packages(self) -> list[PackageInfo]:
        return [self.info(loaded) for loaded in list(self._packages.values())]

    def package(self, name: str) -> PackageInfo:
        return self.info(self._get(name))

    def tasks(self, name: str) -> list[DiscoveredTask]:
        return list(self._get(name).discovery.tasks)

    def discovery(self, name: str) -> Discovery:
        return self._get(name).discovery

    def figures(self) -> list[SandboxFigures]:
        """Each loaded package's calls running and waiting, and its memory: what metrics report."""
        figures = []
        for loaded in self._packages.values():
            sandbox = loaded.sandbox
            running = sandbox.calls_running
            figures.append(SandboxFigures(loaded.namespace or "", loaded.package.name, running,
                                          max(0, sandbox.calls_admitted - running), sandbox.memory_bytes,
                                          sandbox.limits.memory_limit_bytes or 0))
        return figures

    def log(self, name: str) -> PackageLog:
        """The package's recent output outside calls and lifecycle events."""
        self._get(name)
        return self._logs[name]

    def close_logs(self) -> None:
        """Followers of every package's log finish (the service is stopping)."""
        for package_log in self._logs.values():
            package_log.close()

    def _get(self, name: str) -> LoadedPackage:
        loaded = self._packages.get(name)
        if loaded is None:
            raise UnknownPackageError(self._unknown_package_message(name))
        return loaded

    def _unknown_package_message(self, name: str) -> str:
        known = ", ".join(sorted(self._packages)) or "none"
        return f"no package named {name!r} is loaded (loaded: {known})"

    @staticmethod
    def info(loaded: LoadedPackage) -> PackageInfo:
        sandbox = loaded.sandbox
        return PackageInfo(
            key=loaded.key, namespace=loaded.namespace,
            name=loaded.package.name, version=loaded.package.version, state=sandbox.state.value,
            error=sandbox.last_error if sandbox.state is not State.READY else None,
            tasks=[task.id for task in loaded.discovery.tasks],
            workflows=[workflow.name for workflow in loaded.discovery.workflows],
            pid=sandbox.pid, restarts=sandbox.restarts, memory_bytes=sandbox.memory_bytes,
            fingerprint=loaded.package.fingerprint, warnings=list(loaded.package.warnings),
            isolation=sandbox.isolation, memory_peak_bytes=sandbox.memory_peak_bytes,
            restart_causes=dict(sandbox.restart_causes), limits=sandbox.limits,
        )

    # --- calls ---------------------------------------------------------------------

    async def call(self, package: str, task: str, context: ContextLike = None,
                   timeout: float | None = None) -> CallResult:
        """Run one task in the package's sandbox. A task's failure is a result, not an exception."""
        self._check_open()
        payload = encode_context(context, self.config.max_context_bytes)
        for _ in range(3):
            loaded = self._get(package)
            if loaded.discovery.task(task) is None:
                known = ", ".join(t.id for t in loaded.discovery.tasks)
                raise UnknownTaskError(f"package {package!r} has no task {task!r} (its tasks: {known})")
            try:
                result = await loaded.sandbox.call(task, payload, timeout)
            except PackageUnavailableError as exc:
                # Replaced while we looked it up: the new version takes the call.
                if self._packages.get(package) is loaded:
                    self._refused(loaded, exc)
                    raise
                continue
            except CallRejected as exc:
                self._refused(loaded, exc)
                raise
            if self.observer is not None:
                self.observer.call_finished(loaded.key, task, result)
            return result
        raise PackageUnavailableError(f"package {package!r} is being replaced; try again")

    async def poll_trigger(self, package: str, trigger: str, timeout: float | None = None) -> CallResult:
        """Call a poll trigger's function once in the package's sandbox, as a call (slots, timeout, limits).

        On success the result's context is {"fire": bool, "context": {...}}; the function's exception, or a
        return value that is neither a TriggerResult nor a bool, is the result's error.
        """
        self._check_open()
        loaded = self._get(package)
        if not any(t.name == trigger for t in loaded.discovery.triggers):
            known = ", ".join(t.name for t in loaded.discovery.triggers) or "none"
            raise UnknownTaskError(f"package {package!r} has no trigger {trigger!r} (its triggers: {known})")
        return await loaded.sandbox.poll(trigger, timeout)

    def _refused(self, loaded: LoadedPackage, refusal: CallRejected) -> None:
        if self.observer is not None:
            self.observer.call_refused(loaded.key, refusal.code)

    async def run_workflow(self, package: str, workflow: str | None = None, context: ContextLike = None,
                           starting: Callable[[str], Awaitable[None]] | None = None) -> WorkflowRun:
        """Run a workflow's DAG (the engine, in a worker thread), each task a call to the package's sandbox.

        `starting(workflow_name)` is awaited once the request is found valid, before any task runs.
        """
        plan = workflow_plan(self._get(package).discovery, workflow, f"package {package!r}")
        given = orjson.loads(encode_context(context, self.config.max_context_bytes))
        if not isinstance(given, dict):
            raise InvalidContextError("the context must be a JSON object")
        try:
            data = plan.initial_context(given)
        except ValueError as exc:
            raise InvalidContextError(f"workflow {plan.name!r}: {exc}") from None
        if starting is not None:
            await starting(plan.name)
        loop = asyncio.get_running_loop()

        def execute_in_sandbox(task_id: str, task_input: dict[str, Any]) -> dict[str, Any]:
            future = asyncio.run_coroutine_threadsafe(self.call(package, task_id, task_input), loop)
            try:
                result = future.result()
            except CallRejected as exc:
                raise TaskFailed(TaskError(UNAVAILABLE, type(exc).__name__, str(exc))) from exc
            if result.error is not None:
                raise TaskFailed(result.error)
            assert result.context is not None
            return result.context

        max_parallel = self._get(package).sandbox.limits.max_concurrency
        return await self._in_thread(lambda: run_workflow(plan.name, plan.nodes, data, execute_in_sandbox,
                                                          max_parallel=max_parallel))

    # --- upkeep --------------------------------------------------------------------

    async def _monitor_memory(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.memory_sample_interval)
            sandboxes = [loaded.sandbox for loaded in self._packages.values()]
            for sandbox in sandboxes:
                try:
                    sandbox.check_memory()
                except Exception:  # noqa: BLE001 - the monitor must outlive any one sandbox
                    log.exception("memory check for %s failed", sandbox.key)

    async def close(self) -> None:
        """Stop every sandbox (whole process trees), the zygote, and remove the staging area."""
        if self._closed:
            return
        self._closed = True
        if self._monitor is not None:
            self._monitor.cancel()
        loaded, self._packages = list(self._packages.values()), {}
        self.close_logs()
        # Replaced packages still draining get the same grace as the rest, not their own drain time.
        retiring = list(self._retiring.items())
        await asyncio.gather(*(self._discard(item.package, item.sandbox) for item in loaded),
                             *(sandbox.stop(0) for sandbox in list(self._loading)),
                             *(sandbox.stop(self.config.stop_grace) for _, sandbox in retiring),
                             return_exceptions=True)
        await asyncio.gather(*(task for task, _ in retiring), return_exceptions=True)
        if self._loads_in_flight:
            await self._loads_done.wait()  # each sees the supervisor closed, and leaves nothing
        if self.services is not None:
            await self.services.close()
        self._blocking.shutdown(wait=True)
        if self._owns_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def __aenter__(self) -> "AsyncSupervisor":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def discover_package(package: ExtractedPackage, import_timeout: float) -> Discovery:
    """Import a package in a throwaway, confined sandbox and return what it declares (package/inspect)."""

    for directory, _, files in os.walk(package.root):  # a built tree keeps its project's modes
        os.chmod(directory, os.stat(directory).st_mode | 0o555)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)

    async def discover() -> Discovery:
        config = SupervisorConfig(import_timeout=import_timeout, memory_limit_mib=None)
        with tempfile.TemporaryDirectory(prefix="cloaca-discover-") as scratch:
            services = await open_services(config, Path(scratch))
            try:
                sandbox = Sandbox(package.name, package, config.limits_for(None), services)
                try:
                    return await sandbox.start()
                finally:
                    await sandbox.stop(grace=0)
            finally:
                await services.close()

    return asyncio.run(discover())
