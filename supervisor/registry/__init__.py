"""The package registry: where accepted archives and the index of loaded packages live.

    base.py             the interface PackageHost drives (Registry) and the types both backends share
    local.py            the embedded default: DATA_DIR/archives and a SQLite index; nothing to install
    postgres.py         the shared backend: archives (in chunks) and the index in PostgreSQL
    database.py         the shared backend's URL (a secret: masked in every message) and connections
    migrations.py       its schema, as numbered migrations run at start
    membership.py       which supervisors over it are alive
    dialect.py          one connection speaking the SQLite stores' SQL, so they run over PostgreSQL unchanged
    shared_schedules.py schedules over it, and the leases that decide which supervisor fires each
    shared_runs.py      workflow runs over it

`open_registry` picks the backend: no URL, the embedded one in the data dir; a
`postgresql://` URL, the shared one (supervisors on every host that use the same
URL host the same packages: supervisor.registry_sync keeps each in step).
"""

from __future__ import annotations

from pathlib import Path

from supervisor.registry.base import Registry, RegistryEntry, RegistryUnavailable, VersionConflictError
from supervisor.registry.local import LocalRegistry

DEFAULT_LEASE_SECONDS = 15.0


def open_registry(url: str | None, data_dir: Path, address: str = "",
                  lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Registry:
    """The embedded registry in `data_dir`, or the shared one at `url` (migrated, and this supervisor a member).

    Raises RegistryUnavailable (one line, no password) when the shared one cannot be used.
    """
    if url is None:
        return LocalRegistry(data_dir)
    from supervisor.registry.postgres import PostgresRegistry  # psycopg only when it is used

    return PostgresRegistry(url, data_dir, address, lease_seconds)


__all__ = ["DEFAULT_LEASE_SECONDS", "LocalRegistry", "Registry", "RegistryEntry", "RegistryUnavailable",
           "VersionConflictError", "open_registry"]
