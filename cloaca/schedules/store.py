"""Where schedules and their history live: SQLite, and every fire claimed at most once.

A cron fire is claimed by a compare-and-set on the schedule's `next_run_at` (it
moves to the following fire in the same transaction that records the
execution): whoever's update matches fires, anyone else sees zero rows changed
and does not. That is what keeps a restart from firing twice, and what lets a
second scheduler over the same store (another supervisor, later) never
double-fire even before leases decide who fires what. Executions left
`claimed` or `running` by a process that died are marked `lost` at the next
start; fires missed while nothing ran are skipped (the engine's default
catch-up policy).

Thread-safe: one connection behind a lock; callers on an event loop run these
in a worker thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from cloaca._sqlite import open_sqlite, transaction
from cloaca.schedules.cron import CronExpression
from cloaca.schedules.model import Execution, Outcome, Schedule, ScheduleKind, TriggerDefinition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    package TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT '',
    workflow TEXT NOT NULL,
    cron_expression TEXT,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    poll_interval_ms INTEGER,
    allow_concurrent INTEGER NOT NULL DEFAULT 0,
    catchup_policy TEXT NOT NULL DEFAULT 'skip',
    enabled INTEGER NOT NULL DEFAULT 1,
    active INTEGER NOT NULL DEFAULT 1,
    next_run_at REAL,
    last_run_at REAL,
    last_poll_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS schedules_by_trigger ON schedules (owner, package, name) WHERE name != '';
CREATE TABLE IF NOT EXISTS schedule_executions (
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    scheduled_time REAL,
    claimed_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    run_id TEXT,
    context_hash TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS executions_by_schedule ON schedule_executions (schedule_id, claimed_at);
"""

_COLUMNS = ("id", "kind", "owner", "package", "name", "workflow", "cron_expression", "timezone", "poll_interval_ms",
            "allow_concurrent", "catchup_policy", "enabled", "active", "next_run_at", "last_run_at", "last_poll_at",
            "created_at", "updated_at")
_EXECUTION_COLUMNS = ("id", "schedule_id", "outcome", "scheduled_time", "claimed_at", "started_at", "completed_at",
                      "run_id", "context_hash", "error")


class UnknownScheduleError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown schedule"


def _schedule(row: tuple[Any, ...]) -> Schedule:
    values = dict(zip(_COLUMNS, row))
    values["kind"] = ScheduleKind(values["kind"])
    for flag in ("allow_concurrent", "enabled", "active"):
        values[flag] = bool(values[flag])
    return Schedule(**values)


def _execution(row: tuple[Any, ...]) -> Execution:
    values = dict(zip(_EXECUTION_COLUMNS, row))
    values["outcome"] = Outcome(values["outcome"])
    return Execution(**values)


HISTORY_KEPT = 1000  # executions kept per schedule: a poll that fails every 100 ms must not fill the disk


class ScheduleStore:
    def __init__(self, path: str | Path = ":memory:", clock: Any = time.time, connection: Any = None,
                 history_kept: int = HISTORY_KEPT) -> None:
        """A SQLite file (or memory); or `connection`, anything with sqlite3's `execute` over tables made
        already (the service's shared registry gives one, supervisor.registry.dialect)."""
        self.history_kept = max(1, history_kept)
        if connection is not None:
            self._db = connection
        else:
            self._db = open_sqlite(path, _SCHEMA, synchronous_full=True)
        self._stamp: dict[str, Any] = {}  # columns every execution is recorded with (a shared store: its holder)
        self._lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reading -------------------------------------------------------------------

    def _select(self, where: str, args: Iterable[Any] = (), suffix: str = "") -> list[Schedule]:
        with self._lock:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM schedules WHERE {where} {suffix}",
                                    tuple(args)).fetchall()
        return [_schedule(row) for row in rows]

    def get(self, schedule_id: str) -> Schedule:
        found = self._select("id = ?", (schedule_id,))
        if not found:
            raise UnknownScheduleError(f"no schedule {schedule_id!r}")
        return found[0]

    def find_trigger(self, name: str, owner: str = "", package: str | None = None) -> Schedule | None:
        where, args = "name = ? AND owner = ? AND active = 1", [name, owner]
        if package is not None:
            where += " AND package = ?"
            args.append(package)
        found = self._select(where, args)
        return found[0] if found else None

    def schedules(self, kind: ScheduleKind | None = None, owner: str | None = None, enabled_only: bool = False,
             limit: int = 100, offset: int = 0) -> list[Schedule]:
        where, args = ["active = 1"], []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind.value)
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if enabled_only:
            where.append("enabled = 1")
        return self._select(" AND ".join(where), args, f"ORDER BY created_at, id LIMIT {int(limit)} OFFSET {int(offset)}")

    def due_candidates(self) -> list[Schedule]:
        """Every schedule the scheduler should watch."""
        return self._select("active = 1 AND enabled = 1")

    def executions(self, schedule_id: str, limit: int = 100, offset: int = 0) -> list[Execution]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_EXECUTION_COLUMNS)} FROM schedule_executions WHERE schedule_id = ? "
                f"ORDER BY claimed_at DESC, rowid DESC LIMIT ? OFFSET ?", (schedule_id, int(limit), int(offset))
            ).fetchall()
        return [_execution(row) for row in rows]

    def stats(self, since: float) -> dict[str, Any]:
        with self._lock:
            rows = self._db.execute(
                "SELECT e.outcome, count(*) FROM schedule_executions e JOIN schedules s ON s.id = e.schedule_id "
                "WHERE s.kind = 'cron' AND e.claimed_at >= ? GROUP BY e.outcome", (since,)).fetchall()
        counts = dict(rows)
        total = sum(counts.values())
        successful = counts.get(Outcome.COMPLETED.value, 0)
        return {"total_executions": total, "successful_executions": successful,
                "lost_executions": counts.get(Outcome.LOST.value, 0),
                "success_rate": (successful / total) if total else 0.0}

    # --- changing schedules --------------------------------------------------------------

    def register_cron(self, workflow: str, expression: str, timezone_name: str | None = None, owner: str = "",
                      package: str = "", name: str = "", allow_concurrent: bool = False) -> Schedule:
        cron = CronExpression(expression, timezone_name)
        now = self._clock()
        schedule = Schedule(id=str(uuid.uuid4()), kind=ScheduleKind.CRON, workflow=workflow, owner=owner,
                            package=package, name=name, cron_expression=cron.expression, timezone=cron.timezone_name,
                            allow_concurrent=allow_concurrent, next_run_at=cron.next_time(now),
                            created_at=now, updated_at=now)
        self._insert(schedule)
        return schedule

    def _insert(self, schedule: Schedule) -> None:
        values = [getattr(schedule, column) for column in _COLUMNS]
        values[1] = schedule.kind.value
        with self._lock:
            self._db.execute(f"INSERT INTO schedules ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                             values)

    def update_cron(self, schedule_id: str, expression: str, timezone_name: str | None = None) -> Schedule:
        schedule = self.get(schedule_id)
        if schedule.kind is not ScheduleKind.CRON:
            raise ValueError(f"schedule {schedule_id!r} is a trigger, not a cron schedule")
        cron = CronExpression(expression, timezone_name)
        now = self._clock()
        with self._lock:
            self._db.execute("UPDATE schedules SET cron_expression = ?, timezone = ?, next_run_at = ?, updated_at = ? "
                             "WHERE id = ?", (cron.expression, cron.timezone_name,
                                              cron.next_time(now), now, schedule_id))
        return self.get(schedule_id)

    def set_enabled(self, schedule_id: str, enabled: bool) -> Schedule:
        schedule = self.get(schedule_id)
        now = self._clock()
        next_run = schedule.next_run_at
        if enabled and not schedule.enabled and schedule.cron_expression:
            # Resumed: from now on, not the fires it slept through.
            next_run = CronExpression(schedule.cron_expression, schedule.timezone).next_time(now)
        with self._lock:
            self._db.execute("UPDATE schedules SET enabled = ?, next_run_at = ?, updated_at = ? WHERE id = ?",
                             (int(enabled), next_run, now, schedule_id))
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        self.get(schedule_id)
        with self._lock, transaction(self._db):
            self._db.execute("DELETE FROM schedule_executions WHERE schedule_id = ?", (schedule_id,))
            self._db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))

    def sync_package(self, owner: str, package: str, triggers: list[TriggerDefinition]) -> list[Schedule]:
        """A package (re)loaded: its triggers become its active schedules; the ones it dropped go inactive.

        A trigger kept across a replacement keeps its id, history, enabled state and next fire
        (unless its cron expression or timezone changed).
        """
        now = self._clock()
        for trigger in triggers:
            existing = self._select("owner = ? AND package = ? AND name = ?", (owner, package, trigger.name))
            if trigger.cron:
                cron = CronExpression(trigger.cron, trigger.timezone)
                expression, zone = cron.expression, cron.timezone_name
            else:
                expression, zone = None, trigger.timezone or "UTC"
            if not existing:
                next_run = cron.next_time(now) if trigger.cron else None
                self._insert(Schedule(id=str(uuid.uuid4()), kind=trigger.kind, workflow=trigger.workflow, owner=owner,
                                      package=package, name=trigger.name, cron_expression=expression, timezone=zone,
                                      poll_interval_ms=trigger.poll_interval_ms,
                                      allow_concurrent=trigger.allow_concurrent, next_run_at=next_run,
                                      created_at=now, updated_at=now))
                continue
            current = existing[0]
            # The next fire moves only when the timing changed: a fire claimed meanwhile (by another
            # supervisor's scheduler) keeps the next_run_at it set, so it is never fired again.
            moves = not trigger.cron or (expression != current.cron_expression or zone != current.timezone
                                         or current.next_run_at is None or not current.active)
            next_run = cron.next_time(now) if trigger.cron and moves else None
            with self._lock:
                self._db.execute(
                    "UPDATE schedules SET kind = ?, workflow = ?, cron_expression = ?, timezone = ?, "
                    "poll_interval_ms = ?, allow_concurrent = ?, active = 1, "
                    "next_run_at = CASE WHEN ? = 1 THEN ? ELSE next_run_at END, updated_at = ? "
                    "WHERE id = ?", (trigger.kind.value, trigger.workflow, expression, zone, trigger.poll_interval_ms,
                                     int(trigger.allow_concurrent), int(moves), next_run, now, current.id))
        names = [trigger.name for trigger in triggers] or [""]
        with self._lock:
            self._db.execute(
                f"UPDATE schedules SET active = 0, updated_at = ? WHERE owner = ? AND package = ? AND name != '' "
                f"AND name NOT IN ({', '.join('?' * len(names))})", (now, owner, package, *names))
        return self._select("owner = ? AND package = ? AND active = 1 AND name != ''", (owner, package))

    def deactivate_package(self, owner: str, package: str) -> None:
        """A package unloaded: its schedules stop (their history stays, and a reload resumes them)."""
        with self._lock:
            self._db.execute("UPDATE schedules SET active = 0, updated_at = ? WHERE owner = ? AND package = ? "
                             "AND name != ''", (self._clock(), owner, package))

    # --- firing ------------------------------------------------------------------------

    def claim_cron_fire(self, schedule: Schedule, following: float) -> Execution | None:
        """Take the fire at `schedule.next_run_at` (moving it to `following`); None if someone else did."""
        now = self._clock()
        execution = Execution(id=str(uuid.uuid4()), schedule_id=schedule.id, outcome=Outcome.CLAIMED,
                              claimed_at=now, scheduled_time=schedule.next_run_at)
        with self._lock, transaction(self._db):
            changed = self._db.execute(
                "UPDATE schedules SET next_run_at = ?, last_run_at = ? WHERE id = ? AND next_run_at = ? "
                "AND enabled = 1 AND active = 1", (following, now, schedule.id, schedule.next_run_at)).rowcount
            if changed == 1:
                self._insert_execution(execution)
        return execution if changed == 1 else None

    def record_poll(self, schedule: Schedule, outcome: Outcome | None, error: str | None = None,
                    context_hash: str | None = None) -> Execution | None:
        """A trigger was polled; a fire or a poll error is recorded as an execution, a skip is not."""
        now = self._clock()
        execution = None
        with self._lock, transaction(self._db):
            self._db.execute("UPDATE schedules SET last_poll_at = ? WHERE id = ?", (now, schedule.id))
            if outcome is not None:
                execution = Execution(id=str(uuid.uuid4()), schedule_id=schedule.id, outcome=outcome, claimed_at=now,
                                      scheduled_time=now, completed_at=now if outcome is Outcome.POLL_ERROR else None,
                                      context_hash=context_hash, error=error)
                self._insert_execution(execution)
                if outcome is Outcome.CLAIMED:
                    self._db.execute("UPDATE schedules SET last_run_at = ? WHERE id = ?", (now, schedule.id))
        return execution

    def _insert_execution(self, execution: Execution) -> None:
        """Record an execution (inside the caller's transaction); a schedule keeps its last HISTORY_KEPT."""
        values = [getattr(execution, column) for column in _EXECUTION_COLUMNS]
        values[2] = execution.outcome.value
        columns = (*_EXECUTION_COLUMNS, *self._stamp)
        self._db.execute(f"INSERT INTO schedule_executions ({', '.join(columns)}) "
                         f"VALUES ({', '.join('?' * len(columns))})", (*values, *self._stamp.values()))
        self._db.execute(
            "DELETE FROM schedule_executions WHERE schedule_id = ? AND outcome NOT IN (?, ?) AND claimed_at < "
            "(SELECT claimed_at FROM schedule_executions WHERE schedule_id = ? ORDER BY claimed_at DESC "
            "LIMIT 1 OFFSET ?)", (execution.schedule_id, Outcome.CLAIMED.value, Outcome.RUNNING.value,
                                  execution.schedule_id, self.history_kept - 1))

    def update_execution(self, execution_id: str, outcome: Outcome, *, run_id: str | None = None,
                         error: str | None = None) -> None:
        now = self._clock()
        started = now if outcome is Outcome.RUNNING else None
        completed = now if outcome not in (Outcome.CLAIMED, Outcome.RUNNING) else None
        with self._lock:
            self._db.execute(
                "UPDATE schedule_executions SET outcome = ?, run_id = coalesce(?, run_id), error = coalesce(?, error), "
                "started_at = coalesce(started_at, ?), completed_at = coalesce(completed_at, ?) WHERE id = ?",
                (outcome.value, run_id, error, started, completed, execution_id))

    # --- after a restart ---------------------------------------------------------------

    def recover(self) -> int:
        """Start up: executions a dead process left unfinished are lost; fires missed meanwhile are skipped.

        Returns how many executions were marked lost.
        """
        now = self._clock()
        with self._lock:
            lost = self._db.execute(
                "UPDATE schedule_executions SET outcome = ?, completed_at = ?, "
                "error = coalesce(error, 'the service stopped before this run finished') WHERE outcome IN (?, ?)",
                (Outcome.LOST.value, now, Outcome.CLAIMED.value, Outcome.RUNNING.value)).rowcount
        for schedule in self._select("kind = 'cron' AND active = 1 AND next_run_at < ?", (now,)):
            assert schedule.cron_expression is not None
            following = CronExpression(schedule.cron_expression, schedule.timezone).next_time(now)
            with self._lock:
                self._db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ? AND next_run_at = ?",
                                 (following, schedule.id, schedule.next_run_at))
        return lost
