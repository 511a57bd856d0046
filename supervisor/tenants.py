"""Tenants' packages over one supervisor core, kept across restarts: what the daemon serves.

`PackageHost` is what the gRPC edge and `cloaca-sandbox serve` drive. It stores
accepted uploads in the registry (`supervisor.registry`: the embedded one, or a
shared one in PostgreSQL), loads them again at start (checking each archive's
sha256 first), loads watched directories, and keeps the packages that could not
load visible with their error, so an operator sees every package in one list.
Each loaded package's triggers are its tenant's schedules
(`supervisor.scheduling`), and every workflow run, requested or scheduled, is
recorded (`supervisor.run_history`). Every method runs on the service's event loop.

Over a shared registry, what other supervisors record reaches this one through
`sync` (driven by supervisor.registry_sync): the same load path as an upload, so a
replacement fails no call here either. Every change to one package on this host
(upload, unload, sync) holds that package's lock from before its sandbox starts
until the registry records it, so what is loaded here and what the registry says
agree whenever the lock is free.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

from cloaca.engine import WorkflowRun
from supervisor.config import SupervisorConfig
from supervisor.contexts import ContextLike
from supervisor.core import AsyncSupervisor, package_key
from supervisor.discovery import Discovery
from supervisor.errors import IntegrityError, PackageError
from supervisor.package import ExtractedPackage
from supervisor.package_log import PackageLog
from supervisor.registry import LocalRegistry, Registry, RegistryEntry, RegistryUnavailable
from supervisor.registry.base import file_sha256
from supervisor.results import CallResult, PackageInfo, PackageUnavailableError, UnknownPackageError
from supervisor.run_history import LOST, REQUEST, RunHistory, RunRecord
from supervisor.scheduling import ServiceSchedules
from supervisor.sandboxes.events import EventKind, SandboxEvent

if TYPE_CHECKING:
    from supervisor.metrics import ServiceMetrics

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
WATCHED_SCRATCH_PREFIX = ".watched-"  # where a watched file is copied before it loads, inside the data dir
LOADING, READY, FAILED = "loading", "ready", "failed"

T = TypeVar("T")


@dataclass(frozen=True)
class PackageView:
    """One row of ListPackages: a loaded package, one loading, or one that failed."""

    tenant: str
    name: str
    state: str  # loading, ready, failed
    source: str  # "upload" or the watched file
    version: str = ""
    error: str = ""
    info: PackageInfo | None = None
    discovery: Discovery | None = None


Key = tuple[str, str]  # (tenant, package name)


class PackageHost:
    def __init__(self, data_dir: Path, config: SupervisorConfig | None = None,
                 metrics: ServiceMetrics | None = None, registry: Registry | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.metrics = metrics
        self.supervisor = AsyncSupervisor(config or SupervisorConfig(work_dir=data_dir / "work"), observer=metrics)
        self.registry: Registry = registry if registry is not None else LocalRegistry(data_dir)
        self._unready: dict[Key, PackageView] = {}  # loading or failed, by (tenant, name)
        self._sources: dict[Key, str] = {}  # where each loaded package came from
        self._shas: dict[Key, str] = {}  # the archive each package from the registry is loaded from here
        self._refused: dict[Key, str] = {}  # archives a sync could not load here: not tried again as they are
        self._locks: dict[Key, asyncio.Lock] = {}
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="registry")
        self.runs: RunHistory = self.registry.open_run_history()
        self.schedules = ServiceSchedules(
            self.registry.open_schedule_store(), self, self._in_thread,
            None if metrics is None else lambda schedule, outcome: metrics.schedule_fired(
                schedule.owner, schedule.kind.value, outcome.value))
        self.schedules_started = False

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)

    async def start(self) -> None:
        """Clear what a previous service left (it may have been killed), then start the supervisor."""
        await self._in_thread(self._sweep)
        await self.supervisor.start()
        lost = await self._in_thread(self.runs.recover)
        if lost:
            log.warning("%d workflow run(s) were under way when the service last stopped: recorded as lost", lost)

    async def start_schedules(self) -> None:
        """Start firing schedules: once stored and watched packages are loaded, so no fire finds its package
        still loading."""
        await self.schedules.start()
        self.schedules_started = True

    def _lock_for(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _sweep(self) -> None:
        report = self.registry.sweep()
        scratch = [path for path in self.data_dir.glob(f"{WATCHED_SCRATCH_PREFIX}*") if path.is_dir()]
        work = self.supervisor.config.work_dir
        stale = [path for path in (work / "packages", work / "run") if path.exists()] if work is not None else []
        for path in scratch + stale:
            shutil.rmtree(path, ignore_errors=True)
        report.scratch_dirs = len(scratch) + len(stale)
        if report:
            log.info("removed what a previous run left: %d partial upload(s), %d unreferenced archive(s), "
                     "%d staging dir(s)", report.partial_uploads, report.unreferenced_archives, report.scratch_dirs)

    # --- loading -------------------------------------------------------------------

    async def restore(self) -> None:
        """Load every package the registry says is loaded; failures stay visible."""
        entries = await self._in_thread(self.registry.loaded)
        for entry in entries:
            self._unready[(entry.tenant, entry.name)] = PackageView(entry.tenant, entry.name, LOADING, "upload",
                                                                    entry.version)
        limit = asyncio.Semaphore(4)

        async def restore_one(entry: RegistryEntry) -> None:
            async with limit, self._lock_for((entry.tenant, entry.name)):
                await self._load_entry(entry, "restore")

        await asyncio.gather(*(restore_one(entry) for entry in entries))

    async def sync(self, tenant: str, name: str) -> None:
        """Make this host agree with the registry on one package (what another supervisor recorded):
        load the version it names, replacing the one here; unload what it no longer has."""
        key = (tenant, name)
        async with self._lock_for(key):
            entry = await self._in_thread(self.registry.loaded_entry, tenant, name)
            from_registry = self._sources.get(key, "upload") == "upload"
            if entry is None:
                if key in self._shas and from_registry:
                    await self._unload_here(tenant, name)
                    log.info("unloaded %s/%s: it was unloaded from the registry", tenant, name)
                elif key not in self._shas and self._refused.pop(key, None) is not None:
                    self._unready.pop(key, None)  # it failed here, and it is gone from the registry too
                return
            if self._shas.get(key) == entry.sha256 or self._refused.get(key) == entry.sha256:
                return
            if await self._load_entry(entry, "sync"):
                log.info("loaded %s/%s %s from the registry", tenant, name, entry.version)

    def registry_packages(self) -> set[Key]:
        """The packages this host loaded from the registry."""
        return set(self._shas)

    def ready_packages(self) -> set[Key]:
        return {(info.namespace or DEFAULT_TENANT, info.name) for info in self.supervisor.packages()
                if info.state == "ready"}

    @asynccontextmanager
    async def _fetched(self, entry: RegistryEntry) -> AsyncIterator[Path]:
        """The entry's archive as a local file (the registry's own, or a copy out of a shared one)."""
        opened = self.registry.open_archive(entry, self.data_dir)
        path = await self._in_thread(opened.__enter__)
        try:
            yield path
        finally:
            await self._in_thread(opened.__exit__, None, None, None)

    async def _load_entry(self, entry: RegistryEntry, source: str) -> bool:
        """Under the package's lock: load a registry entry here; a failure is logged and kept visible."""
        key = (entry.tenant, entry.name)
        try:
            async with self._fetched(entry) as archive:
                actual = await self._in_thread(file_sha256, archive)
                if actual != entry.sha256:
                    raise IntegrityError(f"the stored archive of {entry.name} {entry.version} does not match its "
                                         f"sha256 (expected {entry.sha256}, found {actual}); it was not loaded")
                with self._timed_load(entry.tenant, source):
                    await self.supervisor.load(archive, namespace=entry.tenant)
        except (PackageError, OSError, RegistryUnavailable) as exc:
            log.error("could not load %s/%s %s: %s", entry.tenant, entry.name, entry.version, exc)
            if isinstance(exc, PackageError):
                self._refused[key] = entry.sha256  # as it is, it will not load here: not again every reconcile
            if key not in self._shas:
                self._unready[key] = PackageView(entry.tenant, entry.name, FAILED, "upload", entry.version, str(exc))
            return False
        self._shas[key] = entry.sha256
        self._refused.pop(key, None)
        await self._loaded(entry.tenant, entry.name, "upload")
        return True

    async def upload(self, tenant: str, archive: Path) -> PackageView:
        """Accept an uploaded archive: store it, load it (replacing an older one), record it.

        A refused upload leaves nothing: its archive is removed (unless a loaded package has the
        same content) and the version it claimed is withdrawn.
        """
        stored = await self._in_thread(self.registry.store, tenant, archive)
        claimed: list[tuple[str, str]] = []
        locked: list[asyncio.Lock] = []

        async def check(package: ExtractedPackage) -> None:
            lock = self._lock_for((tenant, package.name))
            await lock.acquire()
            locked.append(lock)
            if await self._in_thread(self.registry.claim_version, tenant, package.name, package.version,
                                     stored.sha256):
                claimed.append((package.name, package.version))

        try:
            with self._timed_load(tenant, "upload"):
                info = await self.supervisor.load(stored.path, namespace=tenant, check=check)
            try:
                await self._in_thread(self.registry.record_loaded, tenant, info.name, info.version, stored.sha256)
            except BaseException:
                self._shas.pop((tenant, info.name), None)  # loaded here, not recorded: the next sync puts back
                raise                                      # what the registry holds
            self._shas[(tenant, info.name)] = stored.sha256
            self._refused.pop((tenant, info.name), None)
            await self._loaded(tenant, info.name, "upload")
        except BaseException:
            for name, version in claimed:
                await asyncio.shield(self._in_thread(self.registry.withdraw_claim, tenant, name, version,
                                                     stored.sha256))
            raise
        finally:
            await asyncio.shield(self._in_thread(self.registry.release, stored))
            for lock in locked:
                lock.release()
        return self.get(tenant, info.name)

    async def load_file(self, tenant: str, path: Path) -> PackageView:
        """Load a watched file; its failure is kept visible under the file's name."""
        source = str(path)
        try:
            with tempfile.TemporaryDirectory(prefix=WATCHED_SCRATCH_PREFIX, dir=self.data_dir) as scratch:
                # Copied first: the watched file may change while it is extracted.
                snapshot = Path(scratch) / "archive"
                await self._in_thread(shutil.copyfile, path, snapshot)
                with self._timed_load(tenant, "watched"):
                    info = await self.supervisor.load(snapshot, namespace=tenant)
        except (PackageError, OSError) as exc:
            log.error("watched package %s refused: %s", path, exc)
            self._unready[(tenant, path.name)] = PackageView(tenant, path.name, FAILED, source, error=str(exc))
            raise
        self._unready.pop((tenant, path.name), None)
        await self._loaded(tenant, info.name, source)
        return self.get(tenant, info.name)

    @contextmanager
    def _timed_load(self, tenant: str, source: str) -> Iterator[None]:
        """Count the load and its duration by source and outcome (ok, or the loader's error code)."""
        began = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except PackageError as exc:
            outcome = exc.code
            raise
        except BaseException:
            outcome = "error"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.load_finished(tenant, source, outcome, time.perf_counter() - began)

    def state_counts(self) -> dict[str, int]:
        """How many packages of every tenant are loading, ready and failed."""
        views = [self._view(info) for info in self.supervisor.packages()]
        shown = {(view.tenant, view.name) for view in views}
        views += [view for key, view in self._unready.items() if key not in shown]
        return dict(Counter(view.state for view in views))

    async def forget_file(self, tenant: str, path: Path) -> None:
        """A watched file disappeared: unload what it provided, forget its failure."""
        source = str(path)
        self._unready.pop((tenant, path.name), None)
        names = [name for (owner, name), origin in self._sources.items() if owner == tenant and origin == source]
        for name in names:
            try:
                await self.unload(tenant, name)
            except UnknownPackageError:
                pass

    async def _loaded(self, tenant: str, name: str, source: str) -> None:
        """A package (or its new version) is loaded: remember where from, and make its triggers its schedules."""
        self._unready.pop((tenant, name), None)
        self._sources[(tenant, name)] = source
        await self.schedules.package_loaded(tenant, name, self.supervisor.discovery(package_key(name, tenant)))

    async def unload(self, tenant: str, name: str) -> None:
        async with self._lock_for((tenant, name)):
            await self._unload_here(tenant, name)
            await self._in_thread(self.registry.record_unloaded, tenant, name)

    async def _unload_here(self, tenant: str, name: str) -> None:
        failed = self._unready.pop((tenant, name), None)
        self._sources.pop((tenant, name), None)
        self._shas.pop((tenant, name), None)
        self._refused.pop((tenant, name), None)
        try:
            await self.supervisor.unload(package_key(name, tenant))
        except UnknownPackageError:
            if failed is None:
                raise UnknownPackageError(self._unknown(tenant, name)) from None
        await self.schedules.package_unloaded(tenant, name)

    # --- reading -------------------------------------------------------------------

    def list(self, tenant: str) -> list[PackageView]:
        views = [self._view(info) for info in self.supervisor.packages() if info.namespace == tenant]
        shown = {view.name for view in views}
        views += [view for (owner, name), view in self._unready.items() if owner == tenant and name not in shown]
        return sorted(views, key=lambda view: view.name)

    def get(self, tenant: str, name: str) -> PackageView:
        try:
            return self._view(self.supervisor.package(package_key(name, tenant)))
        except UnknownPackageError:
            view = self._unready.get((tenant, name))
            if view is None:
                raise UnknownPackageError(self._unknown(tenant, name)) from None
            return view

    def log(self, tenant: str, name: str) -> PackageLog:
        """The package's recent output and lifecycle events; for one that never loaded, why."""
        try:
            return self.supervisor.log(package_key(name, tenant))
        except UnknownPackageError:
            view = self.get(tenant, name)  # raises UnknownPackageError when it is nowhere
            note = PackageLog()
            note.add_event(SandboxEvent(EventKind.FAILED, package_key(name, tenant), tenant, view.version, 0,
                                        cause="load_failed" if view.state == FAILED else "",
                                        detail=view.error or f"it is {view.state}"))
            note.close()
            return note

    def _view(self, info: PackageInfo) -> PackageView:
        tenant = info.namespace or DEFAULT_TENANT
        state = READY if info.state == "ready" else (FAILED if info.state == "failed" else LOADING)
        source = self._sources.get((tenant, info.name), "upload")
        return PackageView(tenant, info.name, state, source, info.version, info.error or "", info,
                           self.supervisor.discovery(info.key))

    def _unknown(self, tenant: str, name: str) -> str:
        names = ", ".join(view.name for view in self.list(tenant)) or "none"
        return f"no package named {name!r} (your packages: {names})"

    # --- calls ---------------------------------------------------------------------

    async def call(self, tenant: str, name: str, task: str, context: ContextLike,
                   timeout: float | None) -> CallResult:
        try:
            return await self.supervisor.call(package_key(name, tenant), task, context, timeout)
        except UnknownPackageError:
            raise self._not_loaded(tenant, name) from None

    async def run_workflow(self, tenant: str, name: str, workflow: str | None, context: ContextLike,
                           origin: str = REQUEST,
                           started: Callable[[str], Awaitable[None]] | None = None) -> tuple[str, WorkflowRun]:
        """Run a workflow, recorded in the run history from its start (a refused request records nothing).

        `started(run_id)` is awaited once it is recorded, before any task runs.
        """
        run_id = ""
        began = time.perf_counter()

        async def starting(workflow_name: str) -> None:
            nonlocal run_id
            run_id = await self._in_thread(self.runs.started, tenant, name, workflow_name, origin)
            if started is not None:
                await started(run_id)

        try:
            run = await self.supervisor.run_workflow(package_key(name, tenant), workflow, context, starting)
        except UnknownPackageError:
            raise self._not_loaded(tenant, name) from None
        except BaseException as exc:
            if run_id:
                status, error = ((LOST, "nobody waits for this run any more: its caller went away or the service "
                                  "is stopping") if isinstance(exc, asyncio.CancelledError)
                                 else ("failed", f"{type(exc).__name__}: {exc}"))
                await asyncio.shield(self._in_thread(self.runs.finished, run_id, status, error,
                                                     (time.perf_counter() - began) * 1000.0))
            raise
        await self._in_thread(self.runs.finished, run_id, run.status, run.error_message, run.duration_ms)
        return run_id, run

    async def run_scheduled(self, tenant: str, name: str, workflow: str, context: dict[str, Any], origin: str,
                            started: Callable[[str], Awaitable[None]]) -> tuple[str, WorkflowRun]:
        return await self.run_workflow(tenant, name, workflow, context, origin, started)

    async def workflow_runs(self, tenant: str, name: str | None = None, limit: int = 100,
                            offset: int = 0) -> list[RunRecord]:
        return await self._in_thread(self.runs.runs, tenant, name, None, limit, offset)

    async def poll_trigger(self, tenant: str, name: str, trigger: str) -> CallResult:
        try:
            return await self.supervisor.poll_trigger(package_key(name, tenant), trigger)
        except UnknownPackageError:
            raise self._not_loaded(tenant, name) from None

    def _not_loaded(self, tenant: str, name: str) -> PackageUnavailableError:
        """Why a package the supervisor does not hold cannot be called (it may be loading or failed)."""
        view = self.get(tenant, name)  # raises UnknownPackageError when it is nowhere
        return PackageUnavailableError(f"package {name!r} is {view.state}" + (f": {view.error}" if view.error else ""))

    async def close(self) -> None:
        await self.schedules.close()  # no fire starts while the sandboxes stop
        await self.supervisor.close()
        await self._in_thread(self.runs.close)
        await self._in_thread(self.registry.close)
        self._io.shutdown(wait=True)
