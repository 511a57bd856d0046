"""The shared registry's schema, as numbered migrations run at start.

Each supervisor runs `migrate` when it opens the registry. The migrations not yet
applied run in one transaction under an advisory lock, so supervisors starting
together apply each exactly once, and a failure leaves the schema as it was. A
database whose schema is newer than this supervisor knows is refused (an older
supervisor must not write to tables it does not understand).

Times the supervisors compare with each other (leases, liveness) are the
database's (`now()`), never a host's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from supervisor.registry.base import RegistryUnavailable

MIGRATION_LOCK = 0x636C6F616361  # "cloaca": the advisory lock migrations take


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS = (
    Migration(1, "archives in chunks, versions, loaded packages, live supervisors", """
        CREATE TABLE archives (
            tenant TEXT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL, chunks INTEGER NOT NULL,
            stored_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, sha256));
        CREATE TABLE archive_chunks (
            tenant TEXT NOT NULL, sha256 TEXT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL,
            PRIMARY KEY (tenant, sha256, seq),
            FOREIGN KEY (tenant, sha256) REFERENCES archives ON DELETE CASCADE);
        -- archives are compressed already: stored out of line without a second compression
        ALTER TABLE archive_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
        CREATE TABLE supervisors (
            id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, address TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(), expires_at TIMESTAMPTZ NOT NULL);
        CREATE TABLE archive_holds (
            token TEXT PRIMARY KEY, tenant TEXT NOT NULL, sha256 TEXT NOT NULL, supervisor TEXT NOT NULL,
            FOREIGN KEY (tenant, sha256) REFERENCES archives ON DELETE CASCADE);
        CREATE INDEX archive_holds_by_archive ON archive_holds (tenant, sha256);
        CREATE TABLE versions (
            tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
            accepted_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, name, version));
        CREATE TABLE loaded (
            tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
            loaded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, name),
            FOREIGN KEY (tenant, sha256) REFERENCES archives);
        CREATE INDEX loaded_by_archive ON loaded (tenant, sha256);
    """),
    Migration(2, "schedules, their executions and leases; workflow runs", """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
            package TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '', workflow TEXT NOT NULL,
            cron_expression TEXT, timezone TEXT NOT NULL DEFAULT 'UTC', poll_interval_ms INTEGER,
            allow_concurrent INTEGER NOT NULL DEFAULT 0, catchup_policy TEXT NOT NULL DEFAULT 'skip',
            enabled INTEGER NOT NULL DEFAULT 1, active INTEGER NOT NULL DEFAULT 1,
            next_run_at DOUBLE PRECISION, last_run_at DOUBLE PRECISION, last_poll_at DOUBLE PRECISION,
            created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
        CREATE UNIQUE INDEX schedules_by_trigger ON schedules (owner, package, name) WHERE name != '';
        CREATE TABLE schedule_executions (
            seq BIGSERIAL, id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL, outcome TEXT NOT NULL,
            scheduled_time DOUBLE PRECISION, claimed_at DOUBLE PRECISION NOT NULL,
            started_at DOUBLE PRECISION, completed_at DOUBLE PRECISION, run_id TEXT, context_hash TEXT,
            error TEXT, holder TEXT NOT NULL DEFAULT '');
        CREATE INDEX executions_by_schedule ON schedule_executions (schedule_id, claimed_at);
        CREATE INDEX executions_unfinished ON schedule_executions (holder) WHERE outcome IN ('claimed', 'running');
        CREATE TABLE schedule_leases (
            schedule_id TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
        CREATE INDEX leases_by_holder ON schedule_leases (holder);
        CREATE TABLE workflow_runs (
            seq BIGSERIAL, id TEXT PRIMARY KEY, tenant TEXT NOT NULL, package TEXT NOT NULL,
            workflow TEXT NOT NULL, origin TEXT NOT NULL, status TEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, duration_ms DOUBLE PRECISION,
            error TEXT, holder TEXT NOT NULL DEFAULT '');
        CREATE INDEX runs_by_package ON workflow_runs (tenant, package, started_at);
        CREATE INDEX runs_unfinished ON workflow_runs (holder) WHERE status = 'running';
    """),
)

LATEST = MIGRATIONS[-1].version


def migrate(connection: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations this database lacks, in order, in one transaction; returns the versions applied."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS cloaca_migrations (version INTEGER PRIMARY KEY, "
                           "description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        applied = {row[0] for row in connection.execute("SELECT version FROM cloaca_migrations")}
        newest = max(applied, default=0)
        if newest > LATEST:
            raise RegistryUnavailable(
                f"the registry's schema is at version {newest}, newer than this supervisor knows ({LATEST}): "
                "run a supervisor at least as new as the ones that migrated it")
        done = []
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            connection.execute(migration.sql)
            connection.execute("INSERT INTO cloaca_migrations (version, description) VALUES (%s, %s)",
                               (migration.version, migration.description))
            done.append(migration.version)
    return done
