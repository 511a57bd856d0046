"""The daemon's model: tenants' packages over one Supervisor, kept across restarts.

`PackageHost` is what the gRPC service and `cloaca-sandbox serve` drive. It
stores accepted uploads in the registry, loads them again at start, loads
watched directories, and keeps the packages that could not load visible
with their error, so an operator sees every package in one list.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloaca.engine import WorkflowRun
from supervisor.config import SupervisorConfig
from supervisor.discovery import Discovery
from supervisor.errors import PackageError
from supervisor.package import ExtractedPackage
from supervisor.registry import Registry
from supervisor.results import CallResult, PackageInfo, PackageUnavailableError, UnknownPackageError
from supervisor.supervisor import ContextLike, Supervisor, package_key

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
LOADING, READY, FAILED = "loading", "ready", "failed"


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


@dataclass
class _Pending:
    """A package that is loading or failed to load, as the operator should see it."""

    view: PackageView
    sources: set[str] = field(default_factory=set)


class PackageHost:
    def __init__(self, data_dir: Path, config: SupervisorConfig | None = None) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.supervisor = Supervisor(config or SupervisorConfig(work_dir=data_dir / "work"))
        self.registry = Registry(data_dir)
        self._lock = threading.Lock()
        self._unready: dict[tuple[str, str], PackageView] = {}  # loading or failed, by (tenant, name)
        self._sources: dict[tuple[str, str], str] = {}  # where each loaded package came from

    # --- loading -----------------------------------------------------------------

    def restore(self) -> None:
        """Load again every package the registry says was loaded; failures stay visible."""
        entries = self.registry.loaded()
        for entry in entries:
            self._set_unready(PackageView(entry.tenant, entry.name, LOADING, "upload", entry.version))
        if not entries:
            return
        with ThreadPoolExecutor(max_workers=min(4, len(entries)), thread_name_prefix="restore") as pool:
            for entry in entries:
                pool.submit(self._restore_one, entry)

    def _restore_one(self, entry: Any) -> None:
        try:
            self.supervisor.load(entry.archive, namespace=entry.tenant)
            self._mark_loaded(entry.tenant, entry.name, "upload")
            log.info("restored %s/%s %s", entry.tenant, entry.name, entry.version)
        except (PackageError, OSError) as exc:
            log.error("could not restore %s/%s %s: %s", entry.tenant, entry.name, entry.version, exc)
            self._set_unready(PackageView(entry.tenant, entry.name, FAILED, "upload", entry.version, str(exc)))

    def upload(self, tenant: str, archive: Path) -> PackageView:
        """Accept an uploaded archive: move it into the store, load it (replacing an older one), record it."""
        sha256, stored = self.registry.store(archive)

        def refuse_version_conflict(package: ExtractedPackage) -> None:
            self.registry.check_version(tenant, package.name, package.version, sha256)

        info = self.supervisor.load(stored, namespace=tenant, check=refuse_version_conflict)
        self.registry.record_loaded(tenant, info.name, info.version, sha256)
        self._mark_loaded(tenant, info.name, "upload")
        return self.get(tenant, info.name)

    def load_file(self, tenant: str, path: Path) -> PackageView:
        """Load a watched file; its failure is kept visible under the file's name."""
        source = str(path)
        try:
            with tempfile.TemporaryDirectory(dir=self.data_dir) as scratch:
                # Copied first: the watched file may change while it is extracted.
                snapshot = Path(scratch) / "archive"
                shutil.copyfile(path, snapshot)
                info = self.supervisor.load(snapshot, namespace=tenant)
        except (PackageError, OSError) as exc:
            log.error("watched package %s refused: %s", path, exc)
            self._set_unready(PackageView(tenant, path.name, FAILED, source, error=str(exc)))
            raise
        with self._lock:
            self._unready.pop((tenant, path.name), None)
        self._mark_loaded(tenant, info.name, source)
        return self.get(tenant, info.name)

    def forget_file(self, tenant: str, path: Path) -> None:
        """A watched file disappeared: unload what it provided, forget its failure."""
        source = str(path)
        with self._lock:
            self._unready.pop((tenant, path.name), None)
            names = [name for (owner, name), origin in self._sources.items() if owner == tenant and origin == source]
        for name in names:
            try:
                self.unload(tenant, name)
            except UnknownPackageError:
                pass

    def _mark_loaded(self, tenant: str, name: str, source: str) -> None:
        with self._lock:
            self._unready.pop((tenant, name), None)
            self._sources[(tenant, name)] = source

    def _set_unready(self, view: PackageView) -> None:
        with self._lock:
            self._unready[(view.tenant, view.name)] = view

    def unload(self, tenant: str, name: str) -> None:
        with self._lock:
            failed = self._unready.pop((tenant, name), None)
            self._sources.pop((tenant, name), None)
        try:
            self.supervisor.unload(package_key(name, tenant))
        except UnknownPackageError:
            if failed is None:
                raise UnknownPackageError(self._unknown(tenant, name)) from None
        self.registry.record_unloaded(tenant, name)

    # --- reading -----------------------------------------------------------------

    def list(self, tenant: str) -> list[PackageView]:
        views = []
        for info in self.supervisor.packages():
            if info.namespace == tenant:
                try:
                    views.append(self._view(info))
                except UnknownPackageError:
                    pass  # unloaded while we looked
        with self._lock:
            shown = {view.name for view in views}
            views += [view for (owner, name), view in self._unready.items() if owner == tenant and name not in shown]
        return sorted(views, key=lambda view: view.name)

    def get(self, tenant: str, name: str) -> PackageView:
        try:
            return self._view(self.supervisor.package(package_key(name, tenant)))
        except UnknownPackageError:
            with self._lock:
                view = self._unready.get((tenant, name))
            if view is None:
                raise UnknownPackageError(self._unknown(tenant, name)) from None
            return view

    def _view(self, info: PackageInfo) -> PackageView:
        tenant = info.namespace or DEFAULT_TENANT
        state = READY if info.state == "ready" else (FAILED if info.state == "failed" else LOADING)
        with self._lock:
            source = self._sources.get((tenant, info.name), "upload")
        return PackageView(tenant, info.name, state, source, info.version, info.error or "", info,
                           self.supervisor.discovery(info.key))

    def _unknown(self, tenant: str, name: str) -> str:
        names = ", ".join(view.name for view in self.list(tenant)) or "none"
        return f"no package named {name!r} (your packages: {names})"

    # --- calls -------------------------------------------------------------------

    def call(self, tenant: str, name: str, task: str, context: ContextLike, timeout: float | None) -> CallResult:
        try:
            return self.supervisor.call(package_key(name, tenant), task, context, timeout)
        except UnknownPackageError:
            raise self._not_loaded(tenant, name) from None

    def run_workflow(self, tenant: str, name: str, workflow: str | None, context: ContextLike) -> WorkflowRun:
        try:
            return self.supervisor.run_workflow(package_key(name, tenant), workflow, context)
        except UnknownPackageError:
            raise self._not_loaded(tenant, name) from None

    def _not_loaded(self, tenant: str, name: str) -> PackageUnavailableError:
        """Why a package the supervisor does not hold cannot be called (it may be loading or failed)."""
        view = self.get(tenant, name)  # raises UnknownPackageError when it is nowhere
        return PackageUnavailableError(f"package {name!r} is {view.state}" + (f": {view.error}" if view.error else ""))

    def close(self) -> None:
        self.supervisor.close()
        self.registry.close()


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cloaca-sandbox"
