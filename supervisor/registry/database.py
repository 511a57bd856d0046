"""The shared registry's database: its URL (a secret), a small pool of connections, clear one-line failures.

The URL names a PostgreSQL database (`postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=...`,
or anything libpq accepts after `postgresql://`). It is the supervisor's secret: it
is never logged with its password (`masked`), never reaches a sandbox (their
environment is built from nothing), and can come from the environment or a file
instead of the command line.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from supervisor.registry.base import RegistryUnavailable

log = logging.getLogger(__name__)

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 10  # seconds to reach the server before giving up
POOL_SIZE = 4


def check_url(value: str) -> str:
    """A PostgreSQL URL libpq can parse; ValueError (one line, no password) otherwise."""
    scheme = urlsplit(value).scheme
    if scheme not in SCHEMES:
        raise ValueError("the registry must be a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL "
                         f"(got a URL of scheme {scheme!r})" if scheme else
                         "the registry must be a postgresql://USER:PASSWORD@HOST:PORT/DATABASE URL")
    try:
        psycopg.conninfo.conninfo_to_dict(value)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"the registry URL {masked(value)} cannot be parsed: {_one_line(exc)}") from None
    return value


def masked(url: str) -> str:
    """The URL with its password replaced by ***, for logs and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    query = "***" if "password=" in parts.query else parts.query
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def unavailable(url: str, error: BaseException) -> RegistryUnavailable:
    """The database failed us: one line naming where, never the password."""
    text = _one_line(error)
    try:
        password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    except psycopg.Error:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return RegistryUnavailable(f"the package registry {masked(url)} is unavailable: {text}")


class Database:
    """A pool of connections to the registry's database; each `transaction()` commits or rolls back whole."""

    def __init__(self, url: str, application: str = "cloaca-sandbox") -> None:
        self.url = url
        self.description = masked(url)
        self._kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, "application_name": application}
        self._pool = ConnectionPool(url, min_size=1, max_size=POOL_SIZE, open=False, kwargs=self._kwargs,
                                    check=ConnectionPool.check_connection, name="registry")

    def open(self) -> None:
        """Connect once directly (so a bad password or host gives its own message), then open the pool."""
        try:
            psycopg.connect(self.url, **self._kwargs).close()
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)
        except (psycopg.Error, PoolTimeout) as exc:
            self._pool.close()
            raise unavailable(self.url, exc) from None

    def connect(self, **options: Any) -> psycopg.Connection[Any]:
        """A connection of its own, outside the pool (the caller closes it)."""
        try:
            return psycopg.connect(self.url, **self._kwargs, **options)
        except psycopg.Error as exc:
            raise unavailable(self.url, exc) from None

    async def connect_async(self, **options: Any) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(self.url, **self._kwargs, **options)
        except psycopg.Error as exc:
            raise unavailable(self.url, exc) from None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction: committed at the end, rolled back on any error.

        A database that cannot be reached, or fails mid-way, raises RegistryUnavailable;
        the database's own refusals (constraint violations...) pass through as psycopg errors.
        """
        try:
            with self._pool.connection(timeout=CONNECT_TIMEOUT * 2) as connection:
                yield connection
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
            raise unavailable(self.url, exc) from None

    def close(self) -> None:
        self._pool.close()
