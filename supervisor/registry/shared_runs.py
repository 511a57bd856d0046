"""Workflow runs over a shared registry: one history for every supervisor, each run marked with its runner.

The history is supervisor.run_history's, over the shared database, so
ListWorkflowRuns answers the same on every supervisor. A run is recorded with the
supervisor running it; one whose supervisor is no longer alive (its membership
expired) is marked `lost` by whichever supervisor looks next (`recover`, at start
and on every heartbeat), never a live supervisor's run.
"""

from __future__ import annotations

import time

from supervisor.registry.database import Database
from supervisor.registry.dialect import SqliteDialectConnection
from supervisor.run_history import LOST, RUNNING, RunHistory


class SharedRunHistory(RunHistory):
    def __init__(self, database: Database, holder: str) -> None:
        super().__init__(connection=SqliteDialectConnection(database))
        self.holder = holder
        self._stamp = {"holder": holder}  # every run records who runs it
    def recover(self) -> int:
        """Runs under way on supervisors that are no longer alive are lost; returns how many."""
        with self._lock:
            return self._db.execute(
                "UPDATE workflow_runs SET status = ?, finished_at = ?, error = coalesce(error, "
                "'the supervisor running it stopped before this run finished') WHERE status = ? "
                "AND holder NOT IN (SELECT id FROM supervisors WHERE expires_at > now())",
                (LOST, time.time(), RUNNING)).rowcount
