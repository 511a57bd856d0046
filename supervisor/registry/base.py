"""What every registry backend is: the interface PackageHost drives, and the types both backends share.

A registry keeps accepted archives (content-addressed by sha256, per tenant) and
an index: the versions each tenant's packages were accepted at, and which
version of each package is loaded. Its guarantees, whatever the backend:

- an accepted package is never lost: its archive is durable before the index records it as loaded;
- a refused upload leaves nothing: its archive goes, and the version it claimed is withdrawn;
- the version check is atomic: of two uploads of one name and version with different content,
  exactly one wins (`claim_version` checks and records in one transaction).

Every method blocks (disk or database): the host calls them from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from supervisor.errors import PackageError

if TYPE_CHECKING:
    from cloaca.schedules.store import ScheduleStore
    from supervisor.run_history import RunHistory

ARCHIVE_SUFFIX = ".cloacina"
PARTIAL_UPLOAD_PREFIX = ".upload-"  # what the edge receives an upload into, inside the data dir
FETCH_PREFIX = ".fetch-"  # an archive being copied out of a shared registry to load, inside the data dir


class VersionConflictError(PackageError):
    """The same name and version was accepted before with different content."""

    code = "version_conflict"


class RegistryUnavailable(RuntimeError):
    """The shared registry cannot be reached or used; the message is one line, with no password in it."""


@dataclass(frozen=True)
class RegistryEntry:
    """A loaded package as the index records it."""

    tenant: str
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class StoredArchive:
    """An upload's archive, stored and held until `Registry.release`; `path` is a local copy to load from."""

    tenant: str
    sha256: str
    path: Path
    hold: str  # what release() lets go of


@dataclass
class SweepReport:
    """What `sweep` removed at start."""

    partial_uploads: int = 0
    unreferenced_archives: int = 0
    scratch_dirs: int = 0

    def __bool__(self) -> bool:
        return bool(self.partial_uploads or self.unreferenced_archives or self.scratch_dirs)


class Registry(Protocol):
    """The package registry behind PackageHost: `supervisor.registry.local` or `supervisor.registry.postgres`."""

    shared: bool  # other supervisors use it too: what they record must be loaded here as well
    description: str  # where it is, for logs (no password)

    def store(self, tenant: str, source: Path) -> StoredArchive:
        """Make the uploaded archive at `source` (inside the data dir) durable, and hold it."""

    def release(self, stored: StoredArchive) -> None:
        """The upload is done with its archive: removed unless a loaded package refers to it."""

    def claim_version(self, tenant: str, name: str, version: str, sha256: str) -> bool:
        """Check and record the version atomically; True when this call recorded it.
        VersionConflictError when it was accepted (or is being uploaded) with other content."""

    def withdraw_claim(self, tenant: str, name: str, version: str, sha256: str) -> None:
        """Forget a version `claim_version` recorded for an upload that was then refused."""

    def record_loaded(self, tenant: str, name: str, version: str, sha256: str) -> None:
        """The package is loaded from this archive (replacing any other version of it)."""

    def record_unloaded(self, tenant: str, name: str) -> None: ...

    def loaded(self) -> list[RegistryEntry]:
        """Every loaded package, in the order they were loaded."""

    def loaded_entry(self, tenant: str, name: str) -> RegistryEntry | None: ...

    def open_archive(self, entry: RegistryEntry, scratch: Path) -> AbstractContextManager[Path]:
        """A local file holding the entry's archive while the context lasts (written under `scratch` if need be)."""

    def sweep(self) -> SweepReport:
        """At start: remove what a killed service left (partial uploads, archives nothing refers to)."""

    def open_run_history(self) -> RunHistory:
        """Where workflow runs are recorded: beside the index, shared when the registry is."""

    def open_schedule_store(self) -> ScheduleStore:
        """Where schedules and their fires live: beside the index, shared (with leases) when the registry is."""

    def close(self) -> None: ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_partial_uploads(data_dir: Path) -> int:
    """Uploads a killed service was receiving, and archives it was fetching; returns how many."""
    count = 0
    for prefix in (PARTIAL_UPLOAD_PREFIX, FETCH_PREFIX):
        for partial in data_dir.glob(f"{prefix}*"):
            partial.unlink(missing_ok=True)
            count += 1
    return count


def conflict_message(name: str, version: str) -> str:
    return f"{name} {version} was already accepted with different content; give the changed package a new version"
