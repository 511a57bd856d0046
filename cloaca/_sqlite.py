"""SQLite as the stores open and write it: the runner's schedules, the service's run history and registry.

    db = open_sqlite(path, SCHEMA, synchronous_full=True)   # one connection, shared under its owner's lock
    with transaction(db):                                   # BEGIN IMMEDIATE ... COMMIT, rolled back on error
        ...

A connection is in autocommit mode (`isolation_level=None`): each statement commits
on its own unless inside `transaction`. `transaction` works on anything with
sqlite3's `execute`, such as the shared registry's PostgreSQL connection
(supervisor.registry.dialect), which reads `BEGIN IMMEDIATE` as `BEGIN`.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def open_sqlite(path: str | Path, schema: str, *, synchronous_full: bool = False) -> sqlite3.Connection:
    """A connection any thread may use (its owner serialises), in WAL mode on disk, with `schema` made."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    if str(path) != ":memory:":
        db.execute("PRAGMA journal_mode=WAL")
        if synchronous_full:
            db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: Any) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT; any error rolls back, so the connection is never left inside a transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        try:
            db.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - rolled back already (or the connection is gone): the first error counts
            pass
        raise
    db.execute("COMMIT")
