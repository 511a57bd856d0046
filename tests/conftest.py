from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

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


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., tuple[Any, str]]]:
    """Start real services (ServerThread) on 127.0.0.1:0 over `tmp_path/data`; every one is stopped at the end.

    `start(**overrides)` takes ServiceConfig fields and returns (the ServerThread, its address).
    """
    from supervisor.edge.server import ServiceConfig
    from tests.servers import ServerThread

    servers: list[ServerThread] = []

    def start(**overrides: Any) -> tuple[ServerThread, str]:
        settings = {"listen": "127.0.0.1:0", "data_dir": tmp_path / "data", "memory_limit_mib": 512, **overrides}
        server = ServerThread(ServiceConfig(**settings))
        servers.append(server)
        return server, server.start()

    yield start
    for server in servers:
        server.stop(grace=1)


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
