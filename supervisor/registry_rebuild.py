"""Rebuilding the package registry from the stored archives (`cloaca-sandbox rebuild-index`).

The archives are the truth the index summarises: each is stored as
archives/TENANT/SHA256.cloacina and holds its package's name and version. So a
damaged registry.db is moved aside (registry.db.damaged-TIMESTAMP, with its WAL)
and a fresh one records each archive whose content matches its name as loaded.
Where one package has several archives (a kill between storing a replacement
and removing the one it replaced), the newest is loaded. An archive that does
not match its name, or is not a package, is moved to DATA_DIR/quarantine.

What the rebuilt index cannot know: versions accepted earlier whose archives
are gone (unloaded or replaced), so the same name and version could be
accepted again with other content.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.registry.base import ARCHIVE_SUFFIX, file_sha256, fsync_directory
from supervisor.registry.local import REGISTRY_NAME, LocalRegistry
from supervisor.errors import PackageError
from supervisor.instance_lock import DataDirLock
from supervisor.package import extract_package


@dataclass
class RebuildReport:
    damaged_copy: Path | None = None  # where the old registry went
    loaded: list[str] = field(default_factory=list)  # "tenant/name version"
    superseded: list[str] = field(default_factory=list)  # older archives of a package, removed
    quarantined: list[str] = field(default_factory=list)  # "path: why"


def rebuild_registry(data_dir: Path) -> RebuildReport:
    """Index the archives of `data_dir` anew. Refuses (DataDirInUse) while a service runs there."""
    report = RebuildReport()
    with DataDirLock(data_dir):
        report.damaged_copy = _move_aside(data_dir / REGISTRY_NAME)
        found = _read_archives(data_dir, report)
        store = LocalRegistry(data_dir)
        try:
            for (tenant, name), archives in sorted(found.items()):
                archives.sort()  # oldest first: the newest is recorded last, and stays loaded
                for _, version, sha256 in archives:
                    store.record_loaded(tenant, name, version, sha256)
                report.loaded.append(f"{tenant}/{name} {archives[-1][1]}")
                report.superseded += [f"{tenant}/{name} {version}" for _, version, _ in archives[:-1]]
        finally:
            store.close()
    return report


def _move_aside(registry: Path) -> Path | None:
    if not registry.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = registry.with_name(f"{registry.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = registry.with_name(registry.name + suffix)
        if part.exists():
            part.replace(kept.with_name(kept.name + suffix))
    fsync_directory(registry.parent)
    return kept


def _read_archives(data_dir: Path, report: RebuildReport) -> dict[tuple[str, str], list[tuple[float, str, str]]]:
    """(tenant, name) -> [(mtime, version, sha256)] for every archive that is what its name says."""
    found: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
    archives_dir = data_dir / "archives"
    if not archives_dir.is_dir():
        return found
    with tempfile.TemporaryDirectory(prefix=".rebuild-", dir=data_dir) as scratch:
        for tenant_dir in sorted(path for path in archives_dir.iterdir() if path.is_dir()):
            for archive in sorted(tenant_dir.glob(f"*{ARCHIVE_SUFFIX}")):
                sha256 = archive.name.removesuffix(ARCHIVE_SUFFIX)
                actual = file_sha256(archive)
                if actual != sha256:
                    _quarantine(data_dir, archive, f"its content hashes to {actual}", report)
                    continue
                try:
                    package = extract_package(archive, Path(scratch))
                except PackageError as exc:
                    _quarantine(data_dir, archive, f"not a package the loader accepts: {exc}", report)
                    continue
                package.remove()
                found.setdefault((tenant_dir.name, package.name), []).append(
                    (archive.stat().st_mtime, package.version, sha256))
    return found


def _quarantine(data_dir: Path, archive: Path, why: str, report: RebuildReport) -> None:
    target = data_dir / "quarantine" / archive.parent.name / archive.name
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.move(archive, target)
    fsync_directory(target.parent)
    fsync_directory(archive.parent)
    report.quarantined.append(f"{target}: {why}")
