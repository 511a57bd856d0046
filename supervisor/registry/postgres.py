"""The shared registry: archives and their index in PostgreSQL, for supervisors on several hosts.

    archives (tenant, sha256)            one row per stored archive; its bytes in archive_chunks (1 MiB each)
    versions (tenant, name, version)     every version accepted, with its sha256
    loaded (tenant, name)                the version each package is loaded at (every supervisor loads it)
    archive_holds                        archives uploads under way still need, per supervisor
    supervisors                          who is alive: each renews its row (`Membership`)

The guarantees are the embedded registry's, with PostgreSQL's transactions in
place of fsync and SQLite's: an archive's row and all its chunks commit together,
before anything records it as loaded (a foreign key makes that an invariant); a
refused upload's archive and claimed version are removed; `claim_version` inserts
or compares in one transaction, so of two supervisors taking one name and version
with different content exactly one wins.

An archive nothing refers to is removed, unless a live supervisor holds it for an
upload under way; a dead supervisor's holds stop counting once its membership
expires. Every change to `loaded` sends a NOTIFY on CHANNEL in its transaction:
other supervisors hear of it when it commits (supervisor.registry_sync).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psycopg

from supervisor.errors import IntegrityError
from supervisor.registry.base import (
    FETCH_PREFIX,
    RegistryEntry,
    StoredArchive,
    SweepReport,
    VersionConflictError,
    conflict_message,
    file_sha256,
    remove_partial_uploads,
)
from supervisor.registry.database import Database
from supervisor.registry.membership import Membership
from supervisor.registry.migrations import migrate
from supervisor.registry.shared_runs import SharedRunHistory
from supervisor.registry.shared_schedules import SharedScheduleStore

log = logging.getLogger(__name__)

CHANNEL = "cloaca_registry"  # NOTIFY payload: {"tenant": ..., "name": ..., "by": supervisor id}
CHUNK_BYTES = 1024 * 1024

_UNREFERENCED = """
    a.tenant = %(tenant)s AND a.sha256 = %(sha256)s
    AND NOT EXISTS (SELECT 1 FROM loaded l WHERE l.tenant = a.tenant AND l.sha256 = a.sha256)
    AND NOT EXISTS (SELECT 1 FROM archive_holds h JOIN supervisors s ON s.id = h.supervisor
                    WHERE h.tenant = a.tenant AND h.sha256 = a.sha256 AND s.expires_at > now())
"""


class PostgresRegistry:
    shared = True

    def __init__(self, url: str, data_dir: Path, address: str = "", lease_seconds: float = 15.0) -> None:
        self.data_dir = data_dir
        self._closed = False
        self.database = Database(url)
        self.description = f"the shared registry {self.database.description}"
        self.database.open()
        try:
            with self.database.transaction() as connection:
                applied = migrate(connection)
            if applied:
                log.info("registry schema migrated to version %d (applied %s)", applied[-1],
                         ", ".join(map(str, applied)))
            self.membership = Membership(self.database, address, lease_seconds)
            self.membership.join()
        except BaseException:
            self.database.close()
            raise

    @property
    def member_id(self) -> str:
        return self.membership.id

    # --- storing ---------------------------------------------------------------------

    def store(self, tenant: str, source: Path) -> StoredArchive:
        """Write the archive's chunks (unless the same content is stored already) and hold it, in one commit."""
        sha256 = file_sha256(source)
        size = source.stat().st_size
        token = f"{self.member_id}:{uuid.uuid4().hex}"
        with self.database.transaction() as connection:
            inserted = connection.execute(
                "INSERT INTO archives (tenant, sha256, size, chunks, stored_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING", (tenant, sha256, size, math.ceil(size / CHUNK_BYTES), time.time())
            ).rowcount
            if inserted:
                with open(source, "rb") as handle, connection.cursor().copy(
                        "COPY archive_chunks (tenant, sha256, seq, data) FROM STDIN") as copy:
                    for seq, block in enumerate(iter(lambda: handle.read(CHUNK_BYTES), b"")):
                        copy.write_row((tenant, sha256, seq, block))
            connection.execute("INSERT INTO archive_holds (token, tenant, sha256, supervisor) VALUES (%s, %s, %s, %s)",
                               (token, tenant, sha256, self.member_id))
        return StoredArchive(tenant, sha256, source, token)

    def release(self, stored: StoredArchive) -> None:
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM archive_holds WHERE token = %s", (stored.hold,))
        self._remove_if_unreferenced(stored.tenant, stored.sha256)

    def claim_version(self, tenant: str, name: str, version: str, sha256: str) -> bool:
        with self.database.transaction() as connection:
            inserted = connection.execute(
                "INSERT INTO versions (tenant, name, version, sha256, accepted_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING", (tenant, name, version, sha256, time.time())).rowcount
            if inserted:
                return True
            row = connection.execute("SELECT sha256 FROM versions WHERE tenant = %s AND name = %s AND version = %s",
                                     (tenant, name, version)).fetchone()
        if row is not None and row[0] != sha256:
            raise VersionConflictError(conflict_message(name, version))
        return False

    def withdraw_claim(self, tenant: str, name: str, version: str, sha256: str) -> None:
        with self.database.transaction() as connection:
            connection.execute(
                "DELETE FROM versions v WHERE tenant = %s AND name = %s AND version = %s AND sha256 = %s "
                "AND NOT EXISTS (SELECT 1 FROM loaded l WHERE l.tenant = v.tenant AND l.name = v.name "
                "AND l.version = v.version AND l.sha256 = v.sha256)", (tenant, name, version, sha256))

    def record_loaded(self, tenant: str, name: str, version: str, sha256: str) -> None:
        now = time.time()
        with self.database.transaction() as connection:
            previous = connection.execute("SELECT sha256 FROM loaded WHERE tenant = %s AND name = %s FOR UPDATE",
                                          (tenant, name)).fetchone()
            connection.execute("INSERT INTO versions (tenant, name, version, sha256, accepted_at) "
                               "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                               (tenant, name, version, sha256, now))
            connection.execute("INSERT INTO loaded (tenant, name, version, sha256, loaded_at) VALUES (%s, %s, %s, %s, %s) "
                               "ON CONFLICT (tenant, name) DO UPDATE SET version = excluded.version, "
                               "sha256 = excluded.sha256, loaded_at = excluded.loaded_at",
                               (tenant, name, version, sha256, now))
            self._notify(connection, tenant, name)
        if previous is not None and previous[0] != sha256:
            self._remove_if_unreferenced(tenant, previous[0])

    def record_unloaded(self, tenant: str, name: str) -> None:
        with self.database.transaction() as connection:
            row = connection.execute("DELETE FROM loaded WHERE tenant = %s AND name = %s RETURNING sha256",
                                     (tenant, name)).fetchone()
            self._notify(connection, tenant, name)
        if row is not None:
            self._remove_if_unreferenced(tenant, row[0])

    def _notify(self, connection: psycopg.Connection[Any], tenant: str, name: str) -> None:
        payload = json.dumps({"tenant": tenant, "name": name, "by": self.member_id})
        connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def _remove_if_unreferenced(self, tenant: str, sha256: str) -> int:
        """Remove the archive if nothing refers to it; returns how many were removed (0 or 1)."""
        try:
            with self.database.transaction() as connection:
                return connection.execute(f"DELETE FROM archives a WHERE {_UNREFERENCED}",
                                          {"tenant": tenant, "sha256": sha256}).rowcount
        except psycopg.errors.ForeignKeyViolation:
            return 0  # recorded as loaded meanwhile, by another supervisor: it stays

    # --- reading ---------------------------------------------------------------------

    def loaded(self) -> list[RegistryEntry]:
        with self.database.transaction() as connection:
            rows = connection.execute("SELECT tenant, name, version, sha256 FROM loaded ORDER BY loaded_at").fetchall()
        return [RegistryEntry(*row) for row in rows]

    def loaded_entry(self, tenant: str, name: str) -> RegistryEntry | None:
        with self.database.transaction() as connection:
            row = connection.execute("SELECT tenant, name, version, sha256 FROM loaded WHERE tenant = %s AND name = %s",
                                     (tenant, name)).fetchone()
        return RegistryEntry(*row) if row else None

    @contextmanager
    def open_archive(self, entry: RegistryEntry, scratch: Path) -> Iterator[Path]:
        """The archive's chunks, written to a file under `scratch` for as long as the context lasts."""
        fd, name = tempfile.mkstemp(prefix=FETCH_PREFIX, dir=scratch)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out, self.database.transaction() as connection:
                row = connection.execute("SELECT chunks FROM archives WHERE tenant = %s AND sha256 = %s",
                                         (entry.tenant, entry.sha256)).fetchone()
                if row is None:
                    raise IntegrityError(f"the archive of {entry.name} {entry.version} ({entry.sha256}) is missing "
                                         "from the registry")
                with connection.cursor(name="archive_chunks") as chunks:
                    chunks.itersize = 8
                    chunks.execute("SELECT data FROM archive_chunks WHERE tenant = %s AND sha256 = %s ORDER BY seq",
                                   (entry.tenant, entry.sha256))
                    count = 0
                    for (data,) in chunks:
                        out.write(data)
                        count += 1
                if count != row[0]:
                    raise IntegrityError(f"the archive of {entry.name} {entry.version} has {count} of its "
                                         f"{row[0]} chunks in the registry")
            yield path
        finally:
            path.unlink(missing_ok=True)

    # --- upkeep ----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """Partial transfers here; holds of dead supervisors and archives nothing refers to, in the database."""
        report = SweepReport(partial_uploads=remove_partial_uploads(self.data_dir))
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM archive_holds h WHERE NOT EXISTS (SELECT 1 FROM supervisors s "
                               "WHERE s.id = h.supervisor AND s.expires_at > now())")
            connection.execute("DELETE FROM supervisors WHERE expires_at < now() - interval '1 day'")
            candidates = connection.execute(
                "SELECT tenant, sha256 FROM archives a WHERE NOT EXISTS (SELECT 1 FROM loaded l "
                "WHERE l.tenant = a.tenant AND l.sha256 = a.sha256)").fetchall()
        for tenant, sha256 in candidates:
            report.unreferenced_archives += self._remove_if_unreferenced(tenant, sha256)
        return report

    def open_run_history(self) -> SharedRunHistory:
        return SharedRunHistory(self.database, self.member_id)

    def open_schedule_store(self) -> SharedScheduleStore:
        return SharedScheduleStore(self.database, self.member_id, self.membership.lease_seconds)

    def close(self) -> None:
        """Leave (handing over holds and leases at once) and disconnect; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self.membership.leave()
        except Exception as exc:  # noqa: BLE001 - unreachable at stop: the deadline hands over instead
            log.warning("could not leave the registry cleanly (%s): what this supervisor held passes to the "
                        "others when its lease expires", exc)
        finally:
            self.database.close()
