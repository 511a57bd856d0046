"""Which supervisors over a shared registry are alive: each renews a row of `supervisors` with a deadline.

A supervisor joins with a fresh id (one per process start), renews its row every
third of the lease period, and leaves at a clean stop. One that stops renewing
(killed, hung, cut off) counts as dead once its deadline passes: its archive holds
no longer keep archives, its workflow runs under way are lost, and its schedule
leases pass to the others. Deadlines are the database's clock, never a host's.
"""

from __future__ import annotations

import os
import socket
import uuid

from supervisor.registry.database import Database


class Membership:
    def __init__(self, database: Database, address: str, lease_seconds: float) -> None:
        self.database = database
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.address = address
        self.lease_seconds = lease_seconds

    def join(self) -> None:
        with self.database.transaction() as connection:
            connection.execute(
                "INSERT INTO supervisors (id, host, pid, address, expires_at) "
                "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) "
                "ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
                (self.id, socket.gethostname(), os.getpid(), self.address, self.lease_seconds))

    def renew(self) -> None:
        """Push this supervisor's deadline on (joining again if others had given it up for dead)."""
        self.join()

    def leave(self) -> None:
        """A clean stop: hand over at once what a dead supervisor would hand over at its deadline."""
        with self.database.transaction() as connection:
            connection.execute("DELETE FROM archive_holds WHERE supervisor = %s", (self.id,))
            connection.execute("DELETE FROM schedule_leases WHERE holder = %s", (self.id,))
            connection.execute("DELETE FROM supervisors WHERE id = %s", (self.id,))
