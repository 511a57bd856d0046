"""Three supervisors (`cloaca-sandbox serve` processes) over one real PostgreSQL registry, as one service.

Each runs as its own process with its own data dir, on its own port, over the same
database; clients balance over them with gRPC's round_robin. What is checked:
uploads, replacements and unloads on one reach the others; every supervisor
answers calls for every package; a SIGKILLed supervisor fails only the calls in
flight on it; a restarted one converges before it reports SERVING; no accepted
package is lost; schedules fire once across supervisors and pass on when their
holder dies; the database URL reaches no sandbox.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import grpc
import psycopg
import pytest

from supervisor.client import SupervisorClient
from tests.projects import build
from tests.test_cli_service import Daemon, free_port
from tests.test_operations import scrape
from tests.waiting import wait_until

SHARED = '''
import os
import time
import cloaca

@cloaca.task(id="greet")
def greet(context):
    context.set("version", "{version}")
    return context

@cloaca.task(id="nap")
def nap(context):
    time.sleep(0.2)
    context.set("version", "{version}")
    return context

@cloaca.task(id="environ")
def environ(context):
    context.set("environ", dict(os.environ))
    return context
'''

TICKER = '''
import cloaca

@cloaca.task(id="tick")
def tick(context):
    return context

@cloaca.trigger(on="ticker", cron="* * * * * *")
def every_second():
    pass
'''

LEASE = "3"  # seconds: a dead supervisor's leases and runs pass on within about this


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multihost-packages")
    return {"v1": build(root, "shared", SHARED.replace("{version}", "1.0.0"), version="1.0.0"),
            "v2": build(root, "shared", SHARED.replace("{version}", "2.0.0"), version="2.0.0"),
            "other": build(root, "other", SHARED.replace("{version}", "1.0.0"), version="1.0.0"),
            "late": build(root, "late", SHARED.replace("{version}", "1.0.0"), version="1.0.0"),
            "ticker": build(root, "ticker", TICKER)}


class Fleet:
    """Supervisors over one registry; each keeps its data dir, so one can be restarted as itself."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.daemons: dict[str, Daemon] = {}
        self.metrics: dict[str, int] = {}

    def start(self, name: str) -> Daemon:
        port = free_port()
        # The URL comes from the environment: it never shows in the process list.
        daemon = Daemon(self.root / name, "--lease-seconds", LEASE, "--reconcile-interval", "5",
                        "--metrics-listen", f"127.0.0.1:{port}", env={"CLOACA_SANDBOX_REGISTRY": self.url})
        self.daemons[name] = daemon
        self.metrics[name] = port
        return daemon

    def live(self) -> dict[str, Daemon]:
        return {name: d for name, d in self.daemons.items() if d.process.poll() is None}

    def servers(self, names: list[str] | None = None) -> str:
        return ",".join(self.daemons[name].address for name in (names or list(self.live())))

    def packages(self, name: str) -> dict[str, tuple[str, str]]:
        with SupervisorClient(self.daemons[name].address) as client:
            return {p.name: (p.version, "ready" if p.state == p.READY else str(p.state)) for p in client.list()}

    def all_have(self, expected: dict[str, str]) -> bool:
        wanted = {name: (version, "ready") for name, version in expected.items()}
        return all(self.packages(name) == wanted for name in self.live())

    def calls_served(self, name: str) -> float:
        samples = scrape(self.metrics[name])
        return sum(v for (metric, labels), v in samples.items()
                   if metric == "cloaca_sandbox_calls_total" and dict(labels).get("outcome") == "completed")

    def stop(self) -> None:
        for daemon in self.daemons.values():
            daemon.stop(signal.SIGKILL)


@pytest.fixture
def fleet(tmp_path: Path, postgres_url: str) -> Iterator[Fleet]:
    group = Fleet(tmp_path, postgres_url)
    yield group
    group.stop()


class Load:
    """Callers on threads, each calling a task over its own client until stopped; every failure kept."""

    def __init__(self, servers: str, callers: int, task: str = "greet", package: str = "shared") -> None:
        self.servers = servers
        self.task = task
        self.package = package
        self.done = Counter[str]()
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._call, daemon=True) for _ in range(callers)]
        for thread in self.threads:
            thread.start()

    def _call(self) -> None:
        with SupervisorClient(self.servers) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.call(self.package, self.task, {}, timeout=60)
                    if answer.error.kind:
                        self.failures.append(f"{answer.error.kind}: {answer.error.message}")
                    else:
                        self.done[json.loads(answer.context_json)["version"]] += 1
                except grpc.RpcError as exc:
                    self.failures.append(f"{exc.code().name}: {exc.details()}")

    def wait_for_calls(self, count: int) -> None:
        start = sum(self.done.values())
        wait_until(lambda: sum(self.done.values()) >= start + count, 120, f"{count} more calls")

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)


def registry_rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as connection:
        return connection.execute(sql).fetchall()


def test_three_supervisors_over_one_registry_behave_as_one_service(fleet, archives, postgres_url):
    for name in ("a", "b", "c"):
        fleet.start(name)

    # Upload on one: every supervisor hosts it, and answers for it.
    uploaded = fleet.daemons["a"].cli("upload", str(archives["v1"]), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    wait_until(lambda: fleet.all_have({"shared": "1.0.0"}), 60, "every supervisor to load the upload")
    for daemon in fleet.daemons.values():
        called = json.loads(daemon.cli("call", "shared", "greet", "--json").stdout)
        assert called["status"] == "completed" and called["context"]["version"] == "1.0.0"

    # The CLI over all three, round-robin: calls reach every supervisor.
    before = {name: fleet.calls_served(name) for name in fleet.daemons}
    every = fleet.servers()
    for _ in range(12):
        called = fleet.daemons["a"].cli("call", "shared", "greet", "--server", every, "--json")
        assert called.returncode == 0, called.stderr
    with SupervisorClient(every) as client:
        for _ in range(30):
            assert json.loads(client.call("shared", "greet", {}).context_json)["version"] == "1.0.0"
    assert all(fleet.calls_served(name) > before[name] for name in fleet.daemons), "some supervisor got no call"

    # The database URL (and its password) reaches no sandbox, and shows in no process's command line.
    environ = json.loads(fleet.daemons["b"].cli("call", "shared", "environ", "--json").stdout)["context"]["environ"]
    password = postgres_url.split(":")[2].split("@")[0]
    assert password not in json.dumps(environ) and "CLOACA_SANDBOX_REGISTRY" not in environ
    for daemon in fleet.daemons.values():
        assert password not in Path(f"/proc/{daemon.process.pid}/cmdline").read_text()

    # Replace a version on another supervisor under load: no call fails anywhere.
    load = Load(every, callers=6, task="nap")
    load.wait_for_calls(20)
    replaced = fleet.daemons["b"].cli("upload", str(archives["v2"]))
    assert replaced.returncode == 0, replaced.stderr
    wait_until(lambda: fleet.all_have({"shared": "2.0.0"}), 60, "every supervisor to take the new version")
    load.wait_for_calls(30)
    load.stop()
    assert load.failures == [], load.failures[:5]
    assert load.done["1.0.0"] and load.done["2.0.0"]

    # SIGKILL one mid-load, with an upload to it under way: calls to the live ones never fail, and the
    # round-robin clients' next calls go to the live ones.
    survivors = Load(fleet.servers(["a", "b"]), callers=2)
    spread = Load(every, callers=3)
    spread.wait_for_calls(30)
    uploading = threading.Thread(target=lambda: fleet.daemons["c"].cli("upload", str(archives["other"])))
    uploading.start()
    fleet.daemons["c"].stop(signal.SIGKILL)
    uploading.join(120)
    spread.wait_for_calls(60)
    survivors.wait_for_calls(30)
    spread.stop()
    survivors.stop()
    assert survivors.failures == [], survivors.failures[:5]
    # At most the calls in flight on the dead one: each of the 3 callers had one at a time.
    assert len(spread.failures) <= 3, spread.failures
    assert all(failure.startswith("UNAVAILABLE") for failure in spread.failures), spread.failures
    # The upload the dead one was taking is everywhere or nowhere: the live ones agree with the registry.
    recorded = {name: version for name, version in registry_rows(postgres_url, "SELECT name, version FROM loaded")}
    assert recorded.get("shared") == "2.0.0"
    wait_until(lambda: fleet.all_have(recorded), 60, "the live supervisors to agree with the registry")

    # Changes while one is down; then it comes back and converges before it reports SERVING.
    assert fleet.daemons["a"].cli("upload", str(archives["late"])).returncode == 0
    recorded["late"] = "1.0.0"
    wait_until(lambda: fleet.all_have(recorded), 60, "the live supervisors to load the late package")
    restarted = fleet.start("c")
    assert fleet.packages("c") == {name: (version, "ready") for name, version in recorded.items()}
    assert json.loads(restarted.cli("call", "late", "greet", "--json").stdout)["status"] == "completed"

    # Unload on one: gone from all.
    assert fleet.daemons["c"].cli("unload", "late").returncode == 0
    del recorded["late"]
    wait_until(lambda: fleet.all_have(recorded), 60, "every supervisor to unload the package")

    # Nothing accepted was lost, and nothing else is kept.
    assert {name for name, in registry_rows(postgres_url, "SELECT name FROM loaded")} == set(recorded)
    archives_kept = registry_rows(postgres_url, "SELECT count(*) FROM archives")[0][0]
    assert archives_kept == len(recorded)


def fires(url: str) -> list[tuple[float, str, str]]:
    return registry_rows(url, "SELECT scheduled_time, holder, outcome FROM schedule_executions ORDER BY scheduled_time")


def test_schedules_fire_once_across_supervisors_and_pass_on_when_their_holder_dies(fleet, archives, postgres_url):
    for name in ("a", "b", "c"):
        fleet.start(name)
    assert fleet.daemons["a"].cli("upload", str(archives["ticker"])).returncode == 0
    wait_until(lambda: fleet.all_have({"ticker": "1.0.0"}), 60, "every supervisor to load the ticker")
    wait_until(lambda: len(fires(postgres_url)) >= 5, 120, "five fires")
    [(holder,)] = registry_rows(postgres_url, "SELECT holder FROM schedule_leases WHERE expires_at > now()")
    victim = next(name for name, d in fleet.daemons.items() if f"-{d.process.pid}-" in holder)

    fleet.daemons[victim].stop(signal.SIGKILL)
    killed_at = time.time()
    wait_until(lambda: any(when > killed_at and by != holder for when, by, _ in fires(postgres_url)), 120,
               "another supervisor to take the schedule over")
    wait_until(lambda: len([f for f in fires(postgres_url) if f[0] > killed_at]) >= 3, 120, "three more fires")

    history = fires(postgres_url)
    times = [when for when, _, _ in history]
    assert len(times) == len(set(times)), "a cron time fired twice"
    assert {by for _, by, _ in history} - {holder}, "nobody else fired"
    # What the dead one left unfinished is lost, not left running; every live supervisor sees the same history.
    wait_until(lambda: all(outcome not in ("claimed", "running") for when, by, outcome in fires(postgres_url)
                           if by == holder), 60, "the dead holder's fires to be closed")
    live = list(fleet.live().values())
    views = []
    for daemon in live:
        with SupervisorClient(daemon.address) as client:
            [schedule] = client.schedules()
            views.append(schedule.id)
    assert len(set(views)) == 1
