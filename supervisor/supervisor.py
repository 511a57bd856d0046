"""The embedding API: `Supervisor` hosts many packages, one sandbox each.

    with Supervisor(SupervisorConfig(call_timeout=30)) as supervisor:
        info = supervisor.load("data-pipeline-1.0.0.cloacina")
        result = supervisor.call("data-pipeline", "extract", {"day": "2026-11-22"})
        run = supervisor.run_workflow("data-pipeline", "data_pipeline", {})

Every method is thread-safe. `AsyncSupervisor` offers the same from asyncio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from cloaca._json import check_json_object
from cloaca.context import Context
from cloaca.engine import WorkflowRun, run_workflow
from cloaca.errors import UNAVAILABLE, TaskError, TaskFailed
from supervisor.archive import ExtractionLimits
from supervisor.config import PackageLimits, SupervisorConfig
from supervisor.discovery import DiscoveredTask, Discovery
from supervisor.interpreter import build_runtime_dir
from supervisor.memory import MemoryBackend
from supervisor.package import ExtractedPackage, check_discovery, extract_package
from supervisor.results import (
    CallRejected,
    CallResult,
    InvalidContextError,
    PackageInfo,
    PackageUnavailableError,
    UnknownPackageError,
    UnknownTaskError,
)
from supervisor.sandbox import PackageSandbox
from supervisor.workflows import workflow_plan

log = logging.getLogger(__name__)

ContextLike = Context | Mapping[str, Any] | str | bytes | None


@dataclass
class LoadedPackage:
    key: str
    namespace: str | None
    package: ExtractedPackage
    sandbox: PackageSandbox
    discovery: Discovery
    memory_bytes: int = 0


def package_key(name: str, namespace: str | None) -> str:
    """How a package is addressed: its name, or "namespace/name" inside a namespace (a tenant)."""
    return f"{namespace}/{name}" if namespace else name


def encode_context(context: ContextLike) -> bytes:
    """A caller's context as JSON bytes, or InvalidContextError saying what is wrong."""
    if context is None:
        return b"{}"
    if isinstance(context, Context):
        return context.to_json().encode()
    if isinstance(context, (bytes, str)):
        try:
            data = json.loads(context)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidContextError(f"the context is not valid JSON: {exc}") from None
    elif isinstance(context, Mapping):
        data = dict(context)
    else:
        raise InvalidContextError(f"a context must be a JSON object, not {type(context).__qualname__}")
    try:
        check_json_object(data)
    except TypeError as exc:
        raise InvalidContextError(str(exc)) from None
    return json.dumps(data, allow_nan=False).encode()


class Supervisor:
    def __init__(self, config: SupervisorConfig | None = None,
                 extraction_limits: ExtractionLimits = ExtractionLimits()) -> None:
        self.config = config or SupervisorConfig()
        self.extraction_limits = extraction_limits
        self._owns_work_dir = self.config.work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="cloaca-sandbox-")) if self._owns_work_dir \
            else Path(self.config.work_dir)  # type: ignore[arg-type]
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.runtime_dir = build_runtime_dir(self.work_dir)
        self.staging_dir = self.work_dir / "packages"
        self.memory = MemoryBackend.detect()
        log.info("memory limits: %s", self.memory.description)
        self._packages: dict[str, LoadedPackage] = {}
        self._lock = threading.RLock()
        self._retiring: list[threading.Thread] = []
        self._closed = threading.Event()
        self._monitor = threading.Thread(target=self._monitor_memory, name="memory-monitor", daemon=True)
        self._monitor.start()

    # --- packages ----------------------------------------------------------------

    def load(self, archive: bytes | str | os.PathLike[str], limits: PackageLimits | None = None, *,
             namespace: str | None = None, check: Callable[[ExtractedPackage], None] | None = None) -> PackageInfo:
        """Check, extract and start a package; replaces a loaded package of the same name.

        The package is addressed as its name, or "namespace/name" when a
        namespace (a tenant) is given. `check` may refuse the extracted
        package (by raising) before its sandbox starts. Raises a PackageError
        (supervisor.errors) naming the check that failed; nothing is left
        behind when it does. A replaced package's sandbox drains in the
        background: calls it is running finish there, new ones go to the new one.
        """
        self._check_open()
        package = extract_package(archive, self.staging_dir, self.extraction_limits)
        sandbox = PackageSandbox(package, self.config.limits_for(limits), self.config, self.runtime_dir, self.memory)
        try:
            if check is not None:
                check(package)
            discovery = sandbox.start()
            check_discovery(package, discovery)
        except BaseException:
            self._discard(package, sandbox, grace=0)
            raise
        key = package_key(package.name, namespace)
        loaded = LoadedPackage(key, namespace, package, sandbox, discovery)
        with self._lock:
            previous = self._packages.get(key)
            self._packages[key] = loaded
        log.info("loaded %s %s: %d tasks", key, package.version, len(discovery.tasks))
        if previous is not None:
            log.info("replaced %s %s; its sandbox drains", key, previous.package.version)
            drain = threading.Thread(target=self._retire, args=(previous, previous.sandbox.limits.call_timeout),
                                     name=f"drain-{key}", daemon=True)
            with self._lock:
                self._retiring = [thread for thread in self._retiring if thread.is_alive()] + [drain]
            drain.start()
        return self._info(loaded)

    def unload(self, name: str) -> None:
        with self._lock:
            loaded = self._packages.pop(name, None)
        if loaded is None:
            raise UnknownPackageError(self._unknown_package_message(name))
        self._retire(loaded)
        log.info("unloaded %s %s", name, loaded.package.version)

    def _retire(self, loaded: LoadedPackage, grace: float | None = None) -> None:
        self._discard(loaded.package, loaded.sandbox, grace)

    @staticmethod
    def _discard(package: ExtractedPackage, sandbox: PackageSandbox, grace: float | None = None) -> None:
        """Stop the sandbox (its whole tree) and remove everything the package had on disk."""
        sandbox.stop(grace)
        package.remove()
        shutil.rmtree(sandbox.work_dir, ignore_errors=True)

    def packages(self) -> list[PackageInfo]:
        with self._lock:
            loaded = list(self._packages.values())
        return [self._info(item) for item in loaded]

    def package(self, name: str) -> PackageInfo:
        return self._info(self._get(name))

    def tasks(self, name: str) -> list[DiscoveredTask]:
        return list(self._get(name).discovery.tasks)

    def discovery(self, name: str) -> Discovery:
        return self._get(name).discovery

    def _get(self, name: str) -> LoadedPackage:
        with self._lock:
            loaded = self._packages.get(name)
        if loaded is None:
            raise UnknownPackageError(self._unknown_package_message(name))
        return loaded

    def _unknown_package_message(self, name: str) -> str:
        with self._lock:
            known = ", ".join(sorted(self._packages)) or "none"
        return f"no package named {name!r} is loaded (loaded: {known})"

    def _info(self, loaded: LoadedPackage) -> PackageInfo:
        sandbox = loaded.sandbox
        return PackageInfo(
            key=loaded.key, namespace=loaded.namespace,
            name=loaded.package.name, version=loaded.package.version, state=sandbox.state,
            error=sandbox.last_error if sandbox.state != "ready" else None,
            tasks=[task.id for task in loaded.discovery.tasks],
            workflows=[workflow.name for workflow in loaded.discovery.workflows],
            pid=sandbox.pid, restarts=sandbox.restarts, memory_bytes=loaded.memory_bytes,
            fingerprint=loaded.package.fingerprint, warnings=list(loaded.package.warnings),
        )

    # --- calls -------------------------------------------------------------------

    def call(self, package: str, task: str, context: ContextLike = None, timeout: float | None = None) -> CallResult:
        """Run one task in the package's sandbox. A task's failure is a result, not an exception."""
        self._check_open()
        payload = encode_context(context)
        for _ in range(3):
            loaded = self._get(package)
            if loaded.discovery.task(task) is None:
                known = ", ".join(t.id for t in loaded.discovery.tasks)
                raise UnknownTaskError(f"package {package!r} has no task {task!r} (its tasks: {known})")
            try:
                return loaded.sandbox.call(task, payload, timeout)
            except PackageUnavailableError:
                # Replaced while we looked it up: the new version takes the call.
                if self._get(package) is loaded:
                    raise
        raise PackageUnavailableError(f"package {package!r} is being replaced; try again")

    def run_workflow(self, package: str, workflow: str | None = None, context: ContextLike = None) -> WorkflowRun:
        """Run a workflow's DAG, each task in the package's sandbox."""
        plan = workflow_plan(self._get(package).discovery, workflow, f"package {package!r}")
        try:
            data = plan.initial_context(json.loads(encode_context(context)))
        except ValueError as exc:
            raise InvalidContextError(f"workflow {plan.name!r}: {exc}") from None

        def execute_in_sandbox(task_id: str, task_input: dict[str, Any]) -> dict[str, Any]:
            try:
                result = self.call(package, task_id, task_input)
            except CallRejected as exc:
                raise TaskFailed(TaskError(UNAVAILABLE, type(exc).__name__, str(exc))) from exc
            if result.error is not None:
                raise TaskFailed(result.error)
            assert result.context is not None
            return result.context

        sandbox = self._get(package).sandbox
        return run_workflow(plan.name, plan.nodes, data, execute_in_sandbox, max_parallel=sandbox.limits.max_concurrency)

    # --- upkeep ------------------------------------------------------------------

    def _monitor_memory(self) -> None:
        while not self._closed.wait(self.config.memory_sample_interval):
            with self._lock:
                loaded = list(self._packages.values())
            for item in loaded:
                try:
                    item.memory_bytes = item.sandbox.check_memory()
                except Exception:  # noqa: BLE001 - the monitor must outlive any one sandbox
                    log.exception("memory check for %s failed", item.package.name)

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise RuntimeError("this Supervisor has been closed")

    def close(self) -> None:
        """Stop every sandbox (whole process trees) and remove the staging area."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            loaded, self._packages = list(self._packages.values()), {}
        if loaded:
            with ThreadPoolExecutor(max_workers=min(16, len(loaded))) as pool:
                list(pool.map(self._retire, loaded))
        with self._lock:
            retiring = list(self._retiring)
        for thread in retiring:
            thread.join()
        self._monitor.join(timeout=5)
        self.memory.close()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncSupervisor:
    """The embedding API for asyncio programs: each blocking method runs in a worker thread."""

    def __init__(self, config: SupervisorConfig | None = None) -> None:
        self.sync = Supervisor(config)

    async def load(self, archive: bytes | str | os.PathLike[str], limits: PackageLimits | None = None) -> PackageInfo:
        return await asyncio.to_thread(self.sync.load, archive, limits)

    async def unload(self, name: str) -> None:
        await asyncio.to_thread(self.sync.unload, name)

    def packages(self) -> list[PackageInfo]:
        return self.sync.packages()

    def tasks(self, name: str) -> list[DiscoveredTask]:
        return self.sync.tasks(name)

    async def call(self, package: str, task: str, context: ContextLike = None,
                   timeout: float | None = None) -> CallResult:
        return await asyncio.to_thread(self.sync.call, package, task, context, timeout)

    async def run_workflow(self, package: str, workflow: str | None = None, context: ContextLike = None) -> WorkflowRun:
        return await asyncio.to_thread(self.sync.run_workflow, package, workflow, context)

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncSupervisor":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
