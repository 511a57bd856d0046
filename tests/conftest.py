from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from cloaca.registry import REGISTRY

if TYPE_CHECKING:
    from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Tests that declare tasks in this process start and end with an empty registry."""
    REGISTRY.clear()
    yield
    REGISTRY.clear()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator["PostgresServer"]:
    """A real PostgreSQL server for the session, or a skip saying why this machine has none."""
    from tests.postgres import PostgresServer

    why = PostgresServer.unavailable()
    if why is not None:
        pytest.skip(f"needs a PostgreSQL server: {why}")
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: "PostgresServer") -> Iterator[str]:
    """A fresh database on the session's server (dropped after the test)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
