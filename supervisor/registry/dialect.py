"""One PostgreSQL connection that speaks the SQL the SQLite stores write, so their logic exists once.

The schedule store (cloaca.schedules.store) and the run history
(supervisor.run_history) keep one sqlite3 connection behind a lock and call
`execute(sql, args)`. Over a shared registry they get this instead: the same
calls, with the few words of SQLite's dialect they use translated (`?`
placeholders, `BEGIN IMMEDIATE`, `rowid`, which the shared tables spell `seq`),
and booleans passed as the 0 and 1 sqlite3 stores.
Each statement commits on its own unless inside BEGIN ... COMMIT, as with
sqlite3 in autocommit mode. A connection lost between transactions is made
again once, so a database restart costs one failed statement at most.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import psycopg
from psycopg import pq

from supervisor.registry.database import Database, unavailable

_PLACEHOLDER = re.compile(r"\?")
_ROWID = re.compile(r"\browid\b")


def translate(sql: str, with_parameters: bool) -> str:
    """SQLite's spelling of the stores' statements, in PostgreSQL's (a literal % doubled when parameters follow)."""
    if sql.strip().upper() == "BEGIN IMMEDIATE":
        return "BEGIN"
    if with_parameters:
        sql = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
    return _ROWID.sub("seq", sql)


class SqliteDialectConnection:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection = database.connect(autocommit=True)

    def execute(self, sql: str, args: Iterable[Any] = ()) -> psycopg.Cursor[Any]:
        parameters = tuple(int(arg) if isinstance(arg, bool) else arg for arg in args)  # sqlite3 stores 0/1
        statement = translate(sql, bool(parameters))
        try:
            return self._connection.execute(statement, parameters or None)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._in_transaction() or statement == "COMMIT":
                self._reset()
                raise unavailable(self._database.url, exc) from None
            self._reset()  # lost between transactions: connect again, and try this statement once more
            try:
                return self._connection.execute(statement, parameters or None)
            except psycopg.Error as retry:
                self._reset()
                raise unavailable(self._database.url, retry) from None
        except psycopg.Error:
            if self._in_transaction():
                self._connection.execute("ROLLBACK")
            raise

    def _in_transaction(self) -> bool:
        return self._connection.info.transaction_status in (pq.TransactionStatus.INTRANS,
                                                            pq.TransactionStatus.INERROR)

    def _reset(self) -> None:
        try:
            self._connection.close()
        finally:
            self._connection = self._database.connect(autocommit=True)

    def close(self) -> None:
        self._connection.close()
