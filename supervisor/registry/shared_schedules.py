"""Schedules over a shared registry: one store for every supervisor, and a lease deciding who fires each.

The store is cloaca.schedules.store's, over the shared database (every fire is
still a compare-and-set on `next_run_at`, so two schedulers never both record one
cron time). On top, each schedule has a lease: a row (schedule_id, holder,
expires_at) a supervisor takes when it is free or expired and renews every few
seconds (`renew_leases`). A scheduler sees only the schedules it holds
(`due_candidates`), so only the holder polls a trigger or fires a cron time; the
compare-and-set stays as the guard against a holder that lost its lease mid-fire
(a paused process, a partition).

Leases are spread by fair share: each round a supervisor keeps at most
ceil(schedules / live supervisors), lets the rest go (never one with a run under
way), and takes free ones up to its share. A lease that stayed free for a whole
lease period (nobody else could take it) is taken past the share. A supervisor
that dies stops renewing: its leases expire and pass to the others within one
lease period and one renewal round. Executions and fires record their holder, so
a dead supervisor's unfinished ones are marked lost by the others.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

from cloaca.schedules.cron import CronExpression
from cloaca.schedules.model import Outcome, Schedule, TriggerDefinition
from cloaca._sqlite import transaction
from cloaca.schedules.store import ScheduleStore
from supervisor.registry.database import Database
from supervisor.registry.dialect import SqliteDialectConnection

_LIVE = "SELECT id FROM supervisors WHERE expires_at > now()"
_SECONDS = "make_interval(secs => ?)"


class SharedScheduleStore(ScheduleStore):
    def __init__(self, database: Database, holder: str, lease_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock, connection=SqliteDialectConnection(database))
        self.holder = holder
        self._stamp = {"holder": holder}  # every execution records who ran it
        self.lease_seconds = lease_seconds
        self._syncing = threading.Lock()

    # --- what this supervisor fires ------------------------------------------------------

    def due_candidates(self) -> list[Schedule]:
        """The active, enabled schedules whose lease this supervisor holds."""
        return self._select("active = 1 AND enabled = 1 AND id IN (SELECT schedule_id FROM schedule_leases "
                            "WHERE holder = ? AND expires_at > now())", (self.holder,))

    def renew_leases(self, eligible: set[str], busy: set[str]) -> set[str]:
        """One renewal round; returns the schedule ids this supervisor holds after it.

        `eligible`: schedules whose package is ready here; `busy`: those with a run under way
        here (their leases are never let go).
        """
        ttl = self.lease_seconds
        with self._lock, transaction(self._db):
            mine = {row[0] for row in self._db.execute(
                "SELECT schedule_id FROM schedule_leases WHERE holder = ? AND expires_at > now()",
                (self.holder,)).fetchall()}
            live = max(1, int(self._db.execute(f"SELECT count(*) FROM ({_LIVE}) AS live").fetchone()[0]))
            total = int(self._db.execute(
                "SELECT count(*) FROM schedules WHERE active = 1 AND enabled = 1").fetchone()[0])
            share = math.ceil(total / live)
            keep = {sid for sid in mine if sid in eligible or sid in busy}
            extra = sorted(sid for sid in keep if sid not in busy)[:max(0, len(keep) - share)]
            keep -= set(extra)
            gone = sorted(mine - keep)
            if gone:  # expired now, not deleted: another supervisor sees it free at once
                self._db.execute("UPDATE schedule_leases SET expires_at = now() WHERE holder = ? "
                                 "AND schedule_id = ANY(?)", (self.holder, gone))
            self._db.execute(f"UPDATE schedule_leases SET expires_at = now() + {_SECONDS} "
                             "WHERE holder = ? AND schedule_id = ANY(?)", (ttl, self.holder, sorted(keep)))
            candidates = sorted(eligible - mine)
            wanted = share - len(keep)
            if wanted > 0 and candidates:
                self._take(candidates, wanted, "NOT EXISTS (SELECT 1 FROM schedule_leases l "
                           "WHERE l.schedule_id = s.id AND l.expires_at > now())")
            if candidates:  # free for a whole lease period: nobody else can take it, so take it anyway
                self._take(candidates, len(candidates),
                           f"NOT EXISTS (SELECT 1 FROM schedule_leases l WHERE l.schedule_id = s.id "
                           f"AND l.expires_at > now() - {_SECONDS}) AND (EXISTS (SELECT 1 FROM schedule_leases l "
                           f"WHERE l.schedule_id = s.id) OR s.created_at < extract(epoch FROM now()) - ?)",
                           ttl, ttl)
            held = {row[0] for row in self._db.execute(
                "SELECT schedule_id FROM schedule_leases WHERE holder = ? AND expires_at > now()",
                (self.holder,)).fetchall()}
        return held

    def _take(self, candidates: list[str], limit: int, free: str, *free_args: Any) -> None:
        """Take up to `limit` of `candidates` that are `free` (under the lock, in a transaction)."""
        self._db.execute(
            f"INSERT INTO schedule_leases (schedule_id, holder, expires_at) "
            f"SELECT s.id, ?, now() + {_SECONDS} FROM schedules s WHERE s.id = ANY(?) AND s.active = 1 "
            f"AND s.enabled = 1 AND {free} ORDER BY random() LIMIT ? "
            f"ON CONFLICT (schedule_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
            f"WHERE schedule_leases.expires_at <= now()",
            (self.holder, self.lease_seconds, candidates, *free_args, limit))

    # --- one supervisor at a time ---------------------------------------------------------

    def sync_package(self, owner: str, package: str, triggers: list[TriggerDefinition]) -> list[Schedule]:
        """As the base store, one supervisor at a time per package (each loads every package)."""
        key = f"cloaca-schedules:{owner}/{package}"
        with self._syncing:
            with self._lock:
                self._db.execute("SELECT pg_advisory_lock(hashtext(?))", (key,))
            try:
                return super().sync_package(owner, package, triggers)
            finally:
                with self._lock:
                    self._db.execute("SELECT pg_advisory_unlock(hashtext(?))", (key,))

    def recover(self) -> int:
        """Unfinished executions of supervisors that are no longer alive are lost; cron fires nobody took for
        longer than two lease periods (every supervisor was down, or none could load the package) are skipped.

        Returns how many executions were marked lost.
        """
        now = self._clock()
        with self._lock:
            lost = self._db.execute(
                "UPDATE schedule_executions SET outcome = ?, completed_at = ?, error = coalesce(error, "
                "'the supervisor running it stopped before this run finished') WHERE outcome IN (?, ?) "
                f"AND holder NOT IN ({_LIVE})",
                (Outcome.LOST.value, now, Outcome.CLAIMED.value, Outcome.RUNNING.value)).rowcount
        stale = now - 2 * self.lease_seconds
        for schedule in self._select("kind = 'cron' AND active = 1 AND enabled = 1 AND next_run_at < ?", (stale,)):
            assert schedule.cron_expression is not None
            following = CronExpression(schedule.cron_expression, schedule.timezone).next_time(now)
            with self._lock:
                self._db.execute("UPDATE schedules SET next_run_at = ? WHERE id = ? AND next_run_at = ?",
                                 (following, schedule.id, schedule.next_run_at))
        return lost
