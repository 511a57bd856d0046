"""The embedded registry: accepted packages on disk, stored by content (sha256) and indexed in SQLite.

    DATA_DIR/archives/TENANT/SHA256.cloacina   one per loaded package (content-addressed)
    DATA_DIR/registry.db                       the index: versions accepted, packages loaded

Nothing accepted is lost: an archive is written, fsynced and renamed into place
(the directory fsynced too) before the index records it as loaded, so a service
killed at any moment finds, at its next start, every package that was loaded.
And the store keeps only what it should: an upload that is refused leaves
nothing; an archive no loaded package refers to is removed as soon as none
does, or at the next start (`sweep`) when a kill came first.

The version check and its record are one transaction (`claim_version`): of two
uploads of one name and version with different content, exactly one wins.

The index is checked at open (`PRAGMA integrity_check`); a damaged one raises
RegistryCorrupted, which names the file and the way back: `rebuild_registry`
(`cloaca-sandbox rebuild-index`) indexes the archives again, since each one
names its own content and holds its package's name and version.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cloaca._sqlite import transaction
from cloaca.schedules.store import ScheduleStore
from supervisor.registry.base import (
    ARCHIVE_SUFFIX,
    RegistryEntry,
    StoredArchive,
    SweepReport,
    VersionConflictError,
    conflict_message,
    file_sha256,
    fsync_directory,
    remove_partial_uploads,
)
from supervisor.run_history import RunHistory

REGISTRY_NAME = "registry.db"
RUNS_NAME = "runs.db"
SCHEDULES_NAME = "schedules.db"

_SCHEMA = """
    CREATE TABLE IF NOT EXISTS versions (
        tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
        accepted_at REAL NOT NULL, PRIMARY KEY (tenant, name, version));
    CREATE TABLE IF NOT EXISTS loaded (
        tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
        loaded_at REAL NOT NULL, PRIMARY KEY (tenant, name));
"""


class RegistryCorrupted(RuntimeError):
    """The index cannot be trusted; the message names the file and how to rebuild it."""

    def __init__(self, path: Path, detail: str) -> None:
        data_dir = path.parent
        super().__init__(
            f"the package registry {path} is damaged ({detail}). The stored archives are intact and name their "
            f"own content: rebuild the registry from them with `cloaca-sandbox rebuild-index --data-dir {data_dir}` "
            "(it keeps the damaged file beside it), then start the service again")
        self.path = path


def open_index(path: Path) -> sqlite3.Connection:
    """Open (or create) the index and check it page by page; RegistryCorrupted if it is damaged."""
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
        if problems != ["ok"]:
            raise RegistryCorrupted(path, "; ".join(problems))
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        raise RegistryCorrupted(path, str(exc)) from None
    except BaseException:
        if db is not None:
            db.close()
        raise
    return db


class LocalRegistry:
    """The registry of one supervisor: DATA_DIR/archives and DATA_DIR/registry.db."""

    shared = False

    def __init__(self, data_dir: Path) -> None:
        self.description = f"the embedded registry in {data_dir}"
        self.data_dir = data_dir
        self.archives_dir = data_dir / "archives"
        self.archives_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.registry_path = data_dir / REGISTRY_NAME
        self._db = open_index(self.registry_path)
        self._lock = threading.Lock()
        self._held: Counter[Path] = Counter()  # archives uploads under way still need, not yet recorded
        self._adopt_flat_archives()

    def archive_path(self, tenant: str, sha256: str) -> Path:
        return self.archives_dir / tenant / f"{sha256}{ARCHIVE_SUFFIX}"

    # --- storing ---------------------------------------------------------------------

    def store(self, tenant: str, source: Path) -> StoredArchive:
        """Move an archive into the store under its sha256.

        `source` must be on the same filesystem (uploads are received inside the data
        directory), so this is a rename, not a second copy. The stored archive is held
        until `release`: kept if something recorded it meanwhile, removed otherwise.
        """
        sha256 = file_sha256(source)
        target = self.archive_path(tenant, sha256)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        with self._lock:
            self._held[target] += 1
            if target.exists():
                source.unlink()
                return StoredArchive(tenant, sha256, target, str(target))
            with open(source, "rb") as handle:
                os.fsync(handle.fileno())
            source.replace(target)
        fsync_directory(target.parent)
        return StoredArchive(tenant, sha256, target, str(target))

    def release(self, stored: StoredArchive) -> None:
        """An upload is done with its archive: remove it unless a loaded package refers to it."""
        archive = Path(stored.hold)
        with self._lock:
            self._held[archive] -= 1
            if self._held[archive] <= 0:
                del self._held[archive]
            self._remove_if_unreferenced(archive)

    def claim_version(self, tenant: str, name: str, version: str, sha256: str) -> bool:
        """Check and record the version in one transaction; True when this call recorded it.

        Raises VersionConflictError when the name and version were accepted (or are being
        uploaded) with different content.
        """
        with self._lock, transaction(self._db):
            row = self._db.execute("SELECT sha256 FROM versions WHERE tenant=? AND name=? AND version=?",
                                   (tenant, name, version)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                                 (tenant, name, version, sha256, time.time()))
        if row is not None and row[0] != sha256:
            raise VersionConflictError(conflict_message(name, version))
        return row is None

    def withdraw_claim(self, tenant: str, name: str, version: str, sha256: str) -> None:
        """Forget a version `claim_version` recorded for an upload that was then refused."""
        with self._lock:
            self._db.execute("DELETE FROM versions WHERE tenant=? AND name=? AND version=? AND sha256=? AND NOT EXISTS "
                             "(SELECT 1 FROM loaded WHERE tenant=? AND name=? AND version=? AND sha256=?)",
                             (tenant, name, version, sha256) * 2)

    def record_loaded(self, tenant: str, name: str, version: str, sha256: str) -> None:
        """The package is loaded from this archive; the one it replaced is removed when nothing else needs it."""
        now = time.time()
        with self._lock:
            with transaction(self._db):
                previous = self._db.execute("SELECT sha256 FROM loaded WHERE tenant=? AND name=?",
                                            (tenant, name)).fetchone()
                self._db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?)",
                                 (tenant, name, version, sha256, now))
                self._db.execute("INSERT OR REPLACE INTO loaded VALUES (?, ?, ?, ?, ?)",
                                 (tenant, name, version, sha256, now))
            if previous is not None and previous[0] != sha256:
                self._remove_if_unreferenced(self.archive_path(tenant, previous[0]))

    def record_unloaded(self, tenant: str, name: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM loaded WHERE tenant=? AND name=?", (tenant, name)).fetchone()
            self._db.execute("DELETE FROM loaded WHERE tenant=? AND name=?", (tenant, name))
            if row is not None:
                self._remove_if_unreferenced(self.archive_path(tenant, row[0]))

    def _remove_if_unreferenced(self, archive: Path) -> None:
        """Under the lock: remove an archive no loaded package and no upload under way refers to."""
        if self._held.get(archive):
            return
        tenant, sha256 = archive.parent.name, archive.name.removesuffix(ARCHIVE_SUFFIX)
        if self._db.execute("SELECT 1 FROM loaded WHERE tenant=? AND sha256=?", (tenant, sha256)).fetchone():
            return
        try:
            archive.unlink()
        except FileNotFoundError:
            return
        fsync_directory(archive.parent)

    # --- reading ---------------------------------------------------------------------

    def loaded(self) -> list[RegistryEntry]:
        with self._lock:
            rows = self._db.execute("SELECT tenant, name, version, sha256 FROM loaded ORDER BY loaded_at").fetchall()
        return [RegistryEntry(*row) for row in rows]

    def loaded_entry(self, tenant: str, name: str) -> RegistryEntry | None:
        with self._lock:
            row = self._db.execute("SELECT tenant, name, version, sha256 FROM loaded WHERE tenant=? AND name=?",
                                   (tenant, name)).fetchone()
        return RegistryEntry(*row) if row else None

    @contextmanager
    def open_archive(self, entry: RegistryEntry, scratch: Path) -> Iterator[Path]:
        """The stored archive itself: it is already a local file."""
        yield self.archive_path(entry.tenant, entry.sha256)

    # --- upkeep ----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """At start, before any upload: remove partial uploads and archives no loaded package refers to."""
        report = SweepReport(partial_uploads=remove_partial_uploads(self.data_dir))
        with self._lock:
            referenced = {self.archive_path(t, s) for t, s in self._db.execute("SELECT tenant, sha256 FROM loaded")}
            for tenant_dir in self.archives_dir.iterdir():
                if not tenant_dir.is_dir():
                    continue
                for archive in tenant_dir.iterdir():
                    if archive not in referenced and archive not in self._held:
                        archive.unlink(missing_ok=True)
                        report.unreferenced_archives += 1
                if not any(tenant_dir.iterdir()):
                    tenant_dir.rmdir()
        if report:
            fsync_directory(self.data_dir)
        return report

    def _adopt_flat_archives(self) -> None:
        """Stores written before archives were kept per tenant held them at archives/SHA256.cloacina."""
        flat = [path for path in self.archives_dir.glob(f"*{ARCHIVE_SUFFIX}") if path.is_file()]
        if not flat:
            return
        with self._lock:
            for tenant, sha256 in self._db.execute("SELECT DISTINCT tenant, sha256 FROM loaded").fetchall():
                source = self.archives_dir / f"{sha256}{ARCHIVE_SUFFIX}"
                target = self.archive_path(tenant, sha256)
                if source.exists() and not target.exists():
                    target.parent.mkdir(mode=0o700, exist_ok=True)
                    os.link(source, target)
                    fsync_directory(target.parent)
        for path in flat:
            path.unlink()  # adopted above, or referred to by nothing
        fsync_directory(self.archives_dir)

    def open_run_history(self) -> RunHistory:
        return RunHistory(self.data_dir / RUNS_NAME)

    def open_schedule_store(self) -> ScheduleStore:
        return ScheduleStore(self.data_dir / SCHEDULES_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()
