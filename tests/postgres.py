"""A real PostgreSQL server for tests: initdb'd in a temp dir, on a free loopback port, removed at the end.

The server comes from the system's PostgreSQL (Debian's `postgresql` package; its
binaries are found on PATH or under /usr/lib/postgresql/*/bin). initdb refuses to
run as root, so a root test run gives the cluster to an unprivileged user
(`postgres` where it exists, else `nobody`). Clients log in with a password over
TCP (scram-sha-256), as a deployment's would. `PostgresServer.unavailable()` says
why a machine cannot run one, for a clear skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.waiting import wait_until

USER = "cloaca"


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


class PostgresServer:
    """One cluster, started in `start()`; `url(database)` names a database on it with the test user's password."""

    @staticmethod
    def unavailable() -> str | None:
        """Why no server can be started here, or None."""
        binaries = _binaries()
        if binaries is None or not (binaries / "initdb").exists():
            return "PostgreSQL is not installed (no pg_ctl/initdb: apt-get install postgresql)"
        if os.geteuid() == 0 and _server_user() is None:
            return "running as root with no unprivileged user (postgres or nobody) to own the cluster"
        return None

    def __init__(self) -> None:
        binaries = _binaries()
        assert binaries is not None
        self.bin = binaries
        self.root = Path(tempfile.mkdtemp(prefix="cloaca-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.password = secrets.token_hex(12)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.user = _server_user()

    def _as_server_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        uid, gid = self.user.pw_uid, self.user.pw_gid
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self) -> "PostgresServer":
        self.sockets.mkdir(parents=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            os.chmod(self.root, 0o755)
            for path in (self.root, self.sockets, pwfile):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        log = self.root / "initdb.log"
        with open(log, "wb") as out:
            subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                           check=True, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, timeout=120,
                           **self._as_server_user())  # type: ignore[arg-type]
        pwfile.unlink()
        self.port = _free_port()
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=32MB",
             "-c", "fsync=on"],
            stdout=open(self.root / "server.log", "wb"), stderr=subprocess.STDOUT, cwd=self.root,
            **self._as_server_user())  # type: ignore[arg-type]
        wait_until(self._accepting, 60, "the PostgreSQL server to accept connections")
        return self

    def _accepting(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError((self.root / "server.log").read_text())
        return subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True, timeout=30).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh database; returns its URL."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

