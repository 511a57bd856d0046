"""The archive store: accepted packages on disk, stored by content (sha256) and indexed in SQLite.

Nothing accepted is lost: an archive is written (and fsynced) under its
sha256 before the index records it as loaded, so a supervisor killed at any
moment finds, at its next start, every package that was loaded.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import PackageError


class VersionConflictError(PackageError):
    """The same name and version was accepted before with different content."""

    code = "version_conflict"


@dataclass(frozen=True)
class RegistryEntry:
    tenant: str
    name: str
    version: str
    sha256: str
    archive: Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


class ArchiveStore:
    def __init__(self, data_dir: Path) -> None:
        self.archives_dir = data_dir / "archives"
        self.archives_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._db = sqlite3.connect(data_dir / "registry.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS versions (
                tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
                accepted_at REAL NOT NULL, PRIMARY KEY (tenant, name, version));
            CREATE TABLE IF NOT EXISTS loaded (
                tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
                loaded_at REAL NOT NULL, PRIMARY KEY (tenant, name));
        """)
        self._lock = threading.Lock()

    def store(self, source: Path) -> tuple[str, Path]:
        """Move an archive into the store under its sha256; returns (sha256, stored path).

        `source` must be on the same filesystem (uploads are received inside
        the data directory), so this is a rename, not a second copy.
        """
        sha256 = file_sha256(source)
        target = self.archives_dir / f"{sha256}.cloacina"
        if target.exists():
            source.unlink()
        else:
            with open(source, "rb") as handle:
                os.fsync(handle.fileno())
            source.replace(target)
        return sha256, target

    def check_version(self, tenant: str, name: str, version: str, sha256: str) -> None:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM versions WHERE tenant=? AND name=? AND version=?",
                                   (tenant, name, version)).fetchone()
        if row is not None and row[0] != sha256:
            raise VersionConflictError(
                f"{name} {version} was already accepted with different content; "
                "give the changed package a new version")

    def record_loaded(self, tenant: str, name: str, version: str, sha256: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?)",
                             (tenant, name, version, sha256, now))
            self._db.execute("INSERT OR REPLACE INTO loaded VALUES (?, ?, ?, ?, ?)",
                             (tenant, name, version, sha256, now))
            self._db.execute("COMMIT")

    def record_unloaded(self, tenant: str, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM loaded WHERE tenant=? AND name=?", (tenant, name))

    def loaded(self) -> list[RegistryEntry]:
        with self._lock:
            rows = self._db.execute("SELECT tenant, name, version, sha256 FROM loaded ORDER BY loaded_at").fetchall()
        return [RegistryEntry(t, n, v, s, self.archives_dir / f"{s}.cloacina") for t, n, v, s in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
