"""The shared registry against a real PostgreSQL server: the embedded registry's guarantees, and its own."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from supervisor.registry.base import VersionConflictError, file_sha256
from supervisor.registry.migrations import LATEST, MIGRATIONS
from supervisor.registry.postgres import PostgresRegistry
from tests.conftest import ROOT
from tests.test_cli_service import free_port


def upload_file(data_dir: Path, content: bytes, name: str = ".upload-test") -> Path:
    path = data_dir / name
    path.write_bytes(content)
    return path


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture
def registries(postgres_url, tmp_path):
    opened: list[PostgresRegistry] = []

    def open_one(lease_seconds: float = 15.0) -> PostgresRegistry:
        data = tmp_path / f"data-{len(opened)}"
        data.mkdir()
        registry = PostgresRegistry(postgres_url, data, lease_seconds=lease_seconds)
        opened.append(registry)
        return registry

    yield open_one
    for registry in opened:
        registry.close()


def test_migrations_run_once_in_order_even_when_supervisors_start_together(postgres_url, tmp_path):
    errors: list[BaseException] = []
    made: list[PostgresRegistry] = []

    def start(index: int) -> None:
        data = tmp_path / f"d{index}"
        data.mkdir()
        try:
            made.append(PostgresRegistry(postgres_url, data))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for registry in made:
        registry.close()
    assert not errors
    assert rows(postgres_url, "SELECT version FROM cloaca_migrations ORDER BY version") == \
        [(m.version,) for m in MIGRATIONS]
    with psycopg.connect(postgres_url) as connection:  # a schema newer than this supervisor knows is refused
        connection.execute("INSERT INTO cloaca_migrations (version, description) VALUES (%s, 'from the future')",
                           (LATEST + 1,))
    from supervisor.registry import RegistryUnavailable

    with pytest.raises(RegistryUnavailable, match=f"version {LATEST + 1}, newer"):
        PostgresRegistry(postgres_url, tmp_path)


def test_an_accepted_archive_is_kept_whole_and_outlives_the_supervisor(registries, tmp_path):
    first = registries()
    content = bytes(range(256)) * 9000  # about 2.2 MiB: three chunks
    stored = first.store("acme", upload_file(first.data_dir, content))
    assert first.claim_version("acme", "etl", "1.0.0", stored.sha256)
    first.record_loaded("acme", "etl", "1.0.0", stored.sha256)
    first.release(stored)
    first.close()

    second = registries()  # another supervisor, later
    [entry] = second.loaded()
    assert (entry.tenant, entry.name, entry.version, entry.sha256) == ("acme", "etl", "1.0.0", stored.sha256)
    with second.open_archive(entry, second.data_dir) as archive:
        assert archive.read_bytes() == content and file_sha256(archive) == entry.sha256
    assert not list(second.data_dir.glob(".fetch-*"))  # the copy goes with the context


def test_a_refused_upload_leaves_nothing(registries, postgres_url):
    registry = registries()
    stored = registry.store("acme", upload_file(registry.data_dir, b"not really a package"))
    assert registry.claim_version("acme", "etl", "1.0.0", stored.sha256)
    registry.withdraw_claim("acme", "etl", "1.0.0", stored.sha256)  # the load refused it
    registry.release(stored)
    for table in ("archives", "archive_chunks", "archive_holds", "versions", "loaded"):
        assert rows(postgres_url, f"SELECT count(*) FROM {table}") == [(0,)], table


def test_two_supervisors_taking_one_version_with_different_content_exactly_one_wins(registries):
    first, second = registries(), registries()
    for attempt in range(10):
        outcomes: list[object] = []
        barrier = threading.Barrier(2)

        def claim(registry: PostgresRegistry, label: str) -> None:
            stored = registry.store("acme", upload_file(registry.data_dir, f"{attempt}-{label}".encode()))
            barrier.wait()
            try:
                outcomes.append(registry.claim_version("acme", "etl", f"{attempt}.0", stored.sha256))
            except VersionConflictError as exc:
                outcomes.append(exc)
            registry.release(stored)

        threads = [threading.Thread(target=claim, args=(registry, label))
                   for registry, label in ((first, "a"), (second, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(map(type, outcomes), key=str) == sorted([bool, VersionConflictError], key=str), outcomes


def test_a_replaced_or_unloaded_archive_goes_and_a_dead_supervisors_hold_keeps_nothing(registries, postgres_url):
    registry = registries()
    old = registry.store("acme", upload_file(registry.data_dir, b"version one"))
    registry.record_loaded("acme", "etl", "1", old.sha256)
    registry.release(old)
    new = registry.store("acme", upload_file(registry.data_dir, b"version two"))
    registry.record_loaded("acme", "etl", "2", new.sha256)
    registry.release(new)
    assert rows(postgres_url, "SELECT sha256 FROM archives") == [(new.sha256,)]
    registry.record_unloaded("acme", "etl")
    assert rows(postgres_url, "SELECT count(*) FROM archives") == [(0,)]

    dying = registries(lease_seconds=3)  # a supervisor killed while an upload of its was under way
    dying.store("acme", upload_file(dying.data_dir, b"half uploaded"))
    with psycopg.connect(postgres_url) as connection:  # its deadline passes
        connection.execute("UPDATE supervisors SET expires_at = now() - interval '1 second' WHERE id = %s",
                           (dying.member_id,))
    report = registry.sweep()
    assert report.unreferenced_archives == 1
    assert rows(postgres_url, "SELECT count(*) FROM archives") == [(0,)]


def serve_once(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", "--listen", f"127.0.0.1:{free_port()}",
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_bad_or_unreachable_registry_is_one_line_that_never_shows_the_password(postgres_server, tmp_path):
    secret = postgres_server.password
    port = free_port()
    cases = {
        "postgresql://cloaca:wrong-password@127.0.0.1:%d/postgres" % postgres_server.port: "password authentication",
        f"postgresql://cloaca:{secret}@127.0.0.1:{port}/postgres": "unavailable",
        f"postgresql://cloaca:{secret}@127.0.0.1:{postgres_server.port}/no_such_database": "no_such_database",
        "mysql://root:hunter2@db/x": "postgresql://",
        "postgresql://cloaca:hunter2@127.0.0.1:notaport/x": "notaport",
    }
    for index, (url, expected) in enumerate(cases.items()):
        data = tmp_path / f"data-{index}"
        ran = serve_once("--data-dir", str(data), "--registry", url)
        assert ran.returncode == 2, ran.stderr
        assert "Traceback" not in ran.stderr and expected in ran.stderr, ran.stderr
        assert secret not in ran.stderr + ran.stdout and "hunter2" not in ran.stderr + ran.stdout
        assert len([line for line in ran.stderr.splitlines() if line.startswith("error:")]) == 1, ran.stderr
        assert not (data / "archives").exists() or not any((data / "archives").iterdir())

    url_file = tmp_path / "registry-url"
    url_file.write_text("postgresql://cloaca:hunter2@127.0.0.1:1/x\n")
    both = serve_once("--data-dir", str(tmp_path / "d"), "--registry-file", str(url_file),
                      env={"CLOACA_SANDBOX_REGISTRY": f"postgresql://cloaca:{secret}@127.0.0.1:1/x"})
    assert both.returncode == 2 and "not both" in both.stderr and secret not in both.stderr
    missing = serve_once("--data-dir", str(tmp_path / "d"), "--registry-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot be read" in missing.stderr
