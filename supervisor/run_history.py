"""Workflow runs the service started, by a RunWorkflow request or by a schedule: kept in SQLite.

Each run is written when it starts (`running`) and again when it ends (its status,
the engine's error message, how long it took); each package keeps its newest
RUNS_KEPT finished runs. A run under way when the service
stopped is marked `lost` at the next start: nobody will finish it, and a schedule
never runs it again (the scheduler's store records the fire as lost too).

Thread-safe: one connection behind a lock; the service calls it from a worker thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloaca._sqlite import open_sqlite, transaction

RUNNING, LOST = "running", "lost"
RUNS_KEPT = 10_000  # finished runs kept per package, the newest
REQUEST = "request"  # a run's origin when a client asked for it; "schedule:<id>" when a schedule fired it

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workflow_runs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    package TEXT NOT NULL,
    workflow TEXT NOT NULL,
    origin TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    duration_ms REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_package ON workflow_runs (tenant, package, started_at);
"""
_COLUMNS = ("id", "tenant", "package", "workflow", "origin", "status", "started_at", "finished_at", "duration_ms",
            "error")


@dataclass(frozen=True)
class RunRecord:
    id: str
    tenant: str
    package: str
    workflow: str
    origin: str
    status: str  # running, completed, failed, lost
    started_at: float
    finished_at: float | None = None
    duration_ms: float | None = None
    error: str | None = None


class RunHistory:
    def __init__(self, path: str | Path = ":memory:", connection: Any = None, runs_kept: int = RUNS_KEPT) -> None:
        """A SQLite file (or memory); or `connection`, anything with sqlite3's `execute` over tables made
        already (a shared registry's, supervisor.registry.dialect)."""
        self.runs_kept = max(1, runs_kept)
        if connection is not None:
            self._db = connection
        else:
            self._db = open_sqlite(path, _SCHEMA)
        self._stamp: dict[str, Any] = {}  # columns every run is recorded with (a shared history: its holder)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def started(self, tenant: str, package: str, workflow: str, origin: str = REQUEST) -> str:
        run_id = str(uuid.uuid4())
        columns = ("id", "tenant", "package", "workflow", "origin", "status", "started_at", *self._stamp)
        values = (run_id, tenant, package, workflow, origin, RUNNING, time.time(), *self._stamp.values())
        with self._lock, transaction(self._db):
            self._db.execute(f"INSERT INTO workflow_runs ({', '.join(columns)}) VALUES "
                             f"({', '.join('?' * len(columns))})", values)
            self._db.execute(
                "DELETE FROM workflow_runs WHERE tenant = ? AND package = ? AND status != ? AND started_at < "
                "(SELECT started_at FROM workflow_runs WHERE tenant = ? AND package = ? ORDER BY started_at DESC "
                "LIMIT 1 OFFSET ?)", (tenant, package, RUNNING, tenant, package, self.runs_kept - 1))
        return run_id

    def finished(self, run_id: str, status: str, error: str | None, duration_ms: float) -> None:
        with self._lock:
            self._db.execute("UPDATE workflow_runs SET status = ?, error = ?, duration_ms = ?, finished_at = ? "
                             "WHERE id = ?", (status.lower(), error, duration_ms, time.time(), run_id))

    def recover(self) -> int:
        """Runs a stopped service left under way are lost; returns how many."""
        with self._lock:
            return self._db.execute("UPDATE workflow_runs SET status = ?, finished_at = ?, error = coalesce(error, "
                                    "'the service stopped before this run finished') WHERE status = ?",
                                    (LOST, time.time(), RUNNING)).rowcount

    def get(self, run_id: str) -> RunRecord | None:
        found = self._select("id = ?", (run_id,))
        return found[0] if found else None

    def runs(self, tenant: str, package: str | None = None, origin: str | None = None, limit: int = 100,
             offset: int = 0) -> list[RunRecord]:
        """The tenant's runs, newest first; of one package, of one origin, when given."""
        where, args = ["tenant = ?"], [tenant]
        if package:
            where.append("package = ?")
            args.append(package)
        if origin:
            where.append("origin = ?")
            args.append(origin)
        return self._select(" AND ".join(where), args,
                            f"ORDER BY started_at DESC, rowid DESC LIMIT {int(limit)} OFFSET {int(offset)}")

    def _select(self, where: str, args: Any, suffix: str = "") -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM workflow_runs WHERE {where} {suffix}",
                                    tuple(args)).fetchall()
        return [RunRecord(*row) for row in rows]
