"""What an operator expects of the service they run (issue 10): one service per data dir and port."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from supervisor.api import supervisor_pb2 as pb
from supervisor.client import SupervisorClient
from supervisor.instance_lock import DataDirInUse, DataDirLock
from supervisor.service_config import ServiceConfig
from tests.conftest import ROOT
from tests.projects import build
from tests.test_cli_service import Daemon, free_port
from tests.waiting import wait_until


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture
def daemon(tmp_path: Path):
    started = Daemon(tmp_path / "data")
    yield started
    started.stop(signal.SIGKILL)


def test_a_second_service_on_the_same_data_dir_exits_at_once_naming_the_holder(daemon, tmp_path):
    second = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"))
    assert second.returncode == 2, second.stderr
    assert f"pid {daemon.process.pid}" in second.stderr and "in use" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.process.poll() is None  # the first one serves on
    assert daemon.cli("list").returncode == 0


def test_a_second_service_on_the_same_port_exits_at_once_naming_the_address(daemon, tmp_path):
    second = serve("--listen", daemon.address, "--data-dir", str(tmp_path / "other-data"))
    assert second.returncode == 2, second.stderr
    assert f"could not listen on {daemon.address}: the address is in use by pid {daemon.process.pid}" \
        in second.stderr
    assert "Traceback" not in second.stderr
    # Its own data dir is free again: a service started there later runs.
    lock = DataDirLock(tmp_path / "other-data")
    lock.acquire()
    lock.release()


def test_the_lock_excludes_within_one_process_and_is_released(tmp_path):
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUse, match=r"pid \d+"):
            DataDirLock(tmp_path).acquire()
    with DataDirLock(tmp_path) as again:
        assert again.held


# --- configuration -------------------------------------------------------------------------------

def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env={**os.environ, **(env or {})})


def test_version():
    shown = cli("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == "cloaca-sandbox 0.1.0"


@pytest.mark.parametrize("command", [["serve"], ["list"], ["call", "demo", "task"], ["logs", "demo"],
                                     ["describe", "demo"]])
def test_a_bad_environment_value_is_one_line_naming_it(command, tmp_path):
    env = {"CLOACA_SANDBOX_CALL_TIMEOUT": "soon", "CLOACA_SANDBOX_SERVER": "no-port-here",
           "CLOACA_SANDBOX_DATA_DIR": str(tmp_path)}
    ran = cli(*command, env=env)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, ran.stderr
    if command == ["serve"]:
        assert lines[0] == ("error: CLOACA_SANDBOX_CALL_TIMEOUT: input should be a valid number, unable to parse "
                            "string as a number (got 'soon')")
    else:
        assert lines[0] == ("error: CLOACA_SANDBOX_SERVER: the server address must be HOST:PORT (a port from 1 to "
                            "65535), several of them comma-separated, dns:///NAME:PORT or unix:PATH "
                            "(got 'no-port-here')")


def test_a_bad_flag_value_is_one_line_saying_what_it_accepts(tmp_path):
    ran = cli("serve", "--log-level", "verbose", "--data-dir", str(tmp_path))
    assert ran.returncode == 2
    assert ran.stderr == "error: --log-level: input should be 'debug', 'info', 'warning' or 'error' (got 'verbose')\n"
    ran = cli("serve", "--max-queue", "-1", "--data-dir", str(tmp_path))
    assert ran.stderr == "error: --max-queue: input should be greater than or equal to 0 (got '-1')\n"


def test_flags_beat_the_environment_which_beats_the_config_file(tmp_path, monkeypatch):
    from supervisor.options import load_options

    config = tmp_path / "cloaca-sandbox.toml"
    config.write_text('[serve]\ncall_timeout = 5\nmax_queue = 7\nmax_concurrency = 3\npackages = ["a", "b"]\n'
                      '[client]\nserver = "elsewhere:1"\n')
    monkeypatch.setenv("CLOACA_SANDBOX_CONFIG", str(config))
    monkeypatch.setenv("CLOACA_SANDBOX_MAX_QUEUE", "8")
    monkeypatch.setenv("CLOACA_SANDBOX_CALL_TIMEOUT", "6")
    options = load_options(ServiceConfig, {"call_timeout": "9"})
    assert (options.call_timeout, options.max_queue, options.max_concurrency) == (9, 8, 3)
    assert options.packages == [Path("a"), Path("b")] and options.import_timeout == 60  # the file, the default
    monkeypatch.setenv("CLOACA_SANDBOX_PACKAGES", f"c{os.pathsep}d")
    assert load_options(ServiceConfig, {}).packages == [Path("c"), Path("d")]


def test_a_bad_config_file_is_one_line_naming_the_file_and_the_option(tmp_path):
    config = tmp_path / "service.toml"
    config.write_text("[serve]\ncall_timout = 5\n")
    ran = cli("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1
    assert f"the config file {config} has an unknown option 'call_timout' in [serve]" in ran.stderr
    config.write_text("[serve]\nmemory_limit_mib = 'lots'\n")
    ran = cli("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert ran.stderr.startswith(f"error: memory_limit_mib in [serve] of {config}: input should be a valid integer")
    config.write_text("[serve\n")
    ran = cli("list", "--config", str(config))
    assert ran.returncode == 2 and f"the config file {config} is not valid TOML" in ran.stderr
    ran = cli("list", "--config", str(tmp_path / "missing.toml"))
    assert ran.returncode == 2 and "cannot be read: No such file" in ran.stderr


def test_every_help_shows_the_defaults():
    from supervisor.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert set(commands.choices) >= {"serve", "list", "call", "run", "upload", "logs", "describe", "rebuild-index"}
    for name, sub in commands.choices.items():
        for action in sub._actions:
            takes_value = action.option_strings and action.nargs != 0 and action.dest != "help"
            if takes_value:
                assert "default" in (action.help or ""), f"{name} {action.option_strings[0]} shows no default"
    shown = cli("serve", "--help").stdout
    assert "(default: 300; env CLOACA_SANDBOX_CALL_TIMEOUT)" in " ".join(shown.split())


def test_uploading_a_file_that_does_not_exist_says_so(tmp_path):
    ran = cli("upload", str(tmp_path / "missing.cloacina"), env={"CLOACA_SANDBOX_SERVER": f"127.0.0.1:{free_port()}"})
    assert ran.returncode == 2
    assert ran.stderr == f"error: {tmp_path / 'missing.cloacina'}: No such file or directory\n"


# --- the store -------------------------------------------------------------------------------------

DEMO = '''
import cloaca

@cloaca.task(id="echo")
def echo(context):
    context.set("served_by", "{version}")
    return context
'''


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("operations-packages")
    return {
        "v1": build(root, "demo", DEMO.format(version="1")),
        "v1-changed": build(root / "changed", "demo", DEMO.format(version="1-changed")),
        # Imports fine when built; refused by the service, whose environment breaks it.
        "broken": build(root / "broken", "broken", "import os, cloaca\n@cloaca.task(id='t')\ndef t(c):\n    pass\n"
                        "if os.environ.get('CLOACINA_VAR_BREAK_IMPORT'):\n    raise ImportError('broken on purpose')\n"),
    }


def stored_files(data_dir: Path) -> list[str]:
    return sorted(str(path.relative_to(data_dir)) for path in (data_dir / "archives").rglob("*") if path.is_file())


def test_a_refused_upload_leaves_nothing(start_server, archives, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_BREAK_IMPORT", "1")
    _, address = start_server()
    data = tmp_path / "data"
    bogus = tmp_path / "bogus.cloacina"
    bogus.write_bytes(b"not an archive" * 100)
    with SupervisorClient(address) as client:
        for refused in (bogus, archives["broken"]):
            with pytest.raises(grpc.RpcError) as caught:
                client.upload(refused)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stored_files(data) == []
        assert not list(data.glob(".upload-*"))
        client.upload(archives["v1"])
        with pytest.raises(grpc.RpcError) as conflict:
            client.upload(archives["v1-changed"])
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
        kept = stored_files(data)
        assert len(kept) == 1 and kept[0].startswith("archives/default/")  # v1's, not the refused one's
        client.unload("demo")
        assert stored_files(data) == []  # nothing refers to it now


def test_what_a_killed_service_left_is_removed_at_start(start_server, archives, tmp_path):
    data = tmp_path / "data"
    (data / "archives" / "default").mkdir(parents=True)
    (data / ".upload-x1y2z3").write_bytes(b"half an upload")
    (data / "archives" / "default" / ("0" * 64 + ".cloacina")).write_bytes(b"stored, never recorded")
    (data / ".watched-abc").mkdir()
    (data / "work" / "packages" / "0123abcd" / "workflow").mkdir(parents=True)
    _, address = start_server()
    assert not (data / ".upload-x1y2z3").exists() and not (data / ".watched-abc").exists()
    assert stored_files(data) == []
    assert not (data / "work" / "packages" / "0123abcd").exists()


def test_renames_into_the_store_are_durable(tmp_path, archives, monkeypatch):
    from supervisor.registry.local import LocalRegistry

    synced_dirs: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    store = LocalRegistry(tmp_path)
    upload = tmp_path / ".upload-1"
    upload.write_bytes(archives["v1"].read_bytes())
    monkeypatch.setattr(os, "fsync", fsync)
    stored = store.store("default", upload)
    store.close()
    assert stored.path.parent.stat().st_ino in synced_dirs


def test_two_uploads_of_one_version_with_different_content_exactly_one_wins(start_server, archives, tmp_path):
    from supervisor.registry.base import VersionConflictError

    server, _ = start_server()
    data = tmp_path / "data"
    for attempt in range(3):
        copies = []
        for label in ("v1", "v1-changed"):
            copy = data / f".upload-race-{attempt}-{label}"
            copy.write_bytes(archives[label].read_bytes())
            copies.append(copy)

        async def race() -> list[object]:
            return await asyncio.gather(*(server.host.upload("racer", copy) for copy in copies),
                                        return_exceptions=True)

        outcomes = server.run(race())
        winners = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        losers = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        assert isinstance(losers[0], VersionConflictError)
        served = json.loads(server.run(server.host.call("racer", "demo", "echo", b"{}", None)).context_json)
        assert served["served_by"] == ("1" if outcomes[0] is winners[0] else "1-changed")
        assert len(stored_files(data)) == 1
        server.run(server.host.unload("racer", "demo"))


def corrupt_later_page(registry: Path) -> None:
    data = bytearray(registry.read_bytes())
    page = 4096
    assert len(data) >= 4 * page, "the registry must span several pages"
    start = page * (len(data) // page - 2)
    data[start:start + page] = bytes(range(256)) * 16
    registry.write_bytes(bytes(data))


def fill_registry(data_dir: Path) -> None:
    from supervisor.registry.local import LocalRegistry

    store = LocalRegistry(data_dir)
    for number in range(400):  # history of versions: enough rows for the table to span many pages
        store.claim_version("history", f"package-{number:04d}", "1.0.0", f"{number:064x}")
    store.close()


@pytest.mark.parametrize("damage", ["first page", "later page"])
def test_a_damaged_registry_stops_the_service_naming_the_file_and_the_way_back(damage, tmp_path):
    data = tmp_path / "data"
    fill_registry(data)
    registry = data / "registry.db"
    if damage == "first page":
        registry.write_bytes(b"\0" * 100 + registry.read_bytes()[100:])
    else:
        corrupt_later_page(registry)
    ran = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data))
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert f"the package registry {registry} is damaged" in ran.stderr
    assert f"cloaca-sandbox rebuild-index --data-dir {data}" in ran.stderr


def test_rebuild_index_brings_back_every_loaded_package(archives, tmp_path):
    data = tmp_path / "data"
    first = Daemon(data)
    try:
        assert first.cli("upload", str(archives["v1"])).returncode == 0
    finally:
        first.stop()
    fill_registry(data)
    corrupt_later_page(data / "registry.db")
    while_running = Daemon(tmp_path / "other")
    try:
        refused = cli("rebuild-index", "--data-dir", str(tmp_path / "other"))
        assert refused.returncode == 2 and "in use" in refused.stderr  # never under a running service
    finally:
        while_running.stop()
    rebuilt = cli("rebuild-index", "--data-dir", str(data))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "indexed default/demo 1.0.0" in rebuilt.stdout and "registry.db.damaged-" in rebuilt.stdout
    second = Daemon(data)
    try:
        wait_until(lambda: json.loads(second.cli("list", "--json").stdout)[0]["state"] == "ready")
        assert json.loads(second.cli("call", "demo", "echo", "--json").stdout)["context"]["served_by"] == "1"
    finally:
        second.stop()


# --- logs and describe -------------------------------------------------------------------------------

NOISY = '''
import os, sys, warnings
import cloaca

print("importing noisy")
warnings.warn("careful: a warning at import")
print("to stderr at import", file=sys.stderr)

@cloaca.task(id="crash")
def crash(context):
    os._exit(3)

@cloaca.task(id="fine")
def fine(context):
    return context

@cloaca.task(id="slow")
def slow(context):
    import time
    time.sleep(float(context.get("seconds", 30)))
    return context
'''


@pytest.fixture(scope="module")
def noisy_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("noisy"), "noisy", NOISY)


def test_why_a_package_restarted_from_the_cli_alone(noisy_archive, tmp_path):
    daemon = Daemon(tmp_path / "data", "--log-format", "json")
    try:
        assert daemon.cli("upload", str(noisy_archive)).returncode == 0
        shown = daemon.cli("logs", "noisy")
        assert shown.returncode == 0, shown.stderr
        assert "1.0.0#1 | importing noisy" in shown.stdout
        assert "careful: a warning at import" in shown.stdout and "to stderr at import" in shown.stdout
        assert "1.0.0#1 ** incarnation 1 (pid" in shown.stdout and "ready in" in shown.stdout

        follower = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "logs", "noisy", "--follow", "--json"],
                                    cwd=ROOT, env={**os.environ, "CLOACA_SANDBOX_SERVER": daemon.address},
                                    stdout=subprocess.PIPE, text=True)
        crashed = json.loads(daemon.cli("call", "noisy", "crash", "--json").stdout)
        assert crashed["error"]["kind"] == "crashed"

        wait_until(lambda: "restarts:     1 (crashed 1)" in daemon.cli("describe", "noisy").stdout,
                   what="describe showing the restart and its cause")
        described = daemon.cli("describe", "noisy").stdout
        assert "exited [crashed]: exited with code 3" in described
        assert "restarting [crashed]" in described
        assert "limits:       call timeout 300s" in described and "memory:" in described
        assert "isolation:" in described
        details = json.loads(daemon.cli("describe", "noisy", "--json").stdout)
        assert details["restart_causes"] == {"crashed": 1} and details["sandbox_state"] == "ready"
        assert details["memory_peak_bytes"] > 0 and details["limits"]["max_concurrency"] == 4

        assert daemon.cli("unload", "noisy").returncode == 0  # the follower's stream ends with the package
        out, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0
        entries = [json.loads(line) for line in out.splitlines()]
        events = [(entry["event"], entry["cause"]) for entry in entries if entry["kind"] == "event"]
        assert ("exited", "crashed") in events and ("restarting", "crashed") in events
        assert any(entry["kind"] == "output" and entry["incarnation"] == 2 and "importing noisy" in entry["text"]
                   for entry in entries)  # the new incarnation's import, as it happened

        log_lines = [json.loads(line) for line in daemon.log.read_text().splitlines() if line.startswith("{")]
        exited = [line for line in log_lines if line.get("event") == "exited" and line.get("cause") == "crashed"]
        assert exited and exited[0]["package"] == "default/noisy" and exited[0]["tenant"] == "default"
        assert exited[0]["incarnation"] == 1 and exited[0]["level"] == "warning"
    finally:
        daemon.stop()


# --- metrics -----------------------------------------------------------------------------------------

def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_of_calls_sandboxes_loads_and_the_service(start_server, noisy_archive):
    port = free_port()
    server, address = start_server(metrics_listen=f"127.0.0.1:{port}", max_concurrency=1, max_queue=0)
    package = {"tenant": "default", "package": "noisy"}
    with SupervisorClient(address) as client:
        client.upload(noisy_archive)
        for _ in range(3):
            assert client.call("noisy", "fine").status == pb.COMPLETED
        assert client.call("noisy", "crash").error.kind == "crashed"
        wait_until(lambda: client.get("noisy").restarts == 1 and client.get("noisy").state == pb.Package.READY)
        slow = client.stub.CallTask.future(pb.CallTaskRequest(package="noisy", task="slow",
                                                             context_json=b'{"seconds": 30}', timeout_seconds=2))
        wait_until(lambda: value(scrape(port), "cloaca_sandbox_calls_running", **package) == 1)
        with pytest.raises(grpc.RpcError) as refused:
            client.call("noisy", "fine")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert slow.result().error.kind == "timeout"
        with pytest.raises(grpc.RpcError):
            client.call("noisy", "no-such-task")
        wait_until(lambda: (value(scrape(port), "cloaca_sandbox_sandbox_memory_bytes", **package) or 0) > 0)
        # The incarnation replacing the timed-out one counts as started once it is ready, after the call's answer.
        wait_until(lambda: (value(scrape(port), "cloaca_sandbox_sandbox_starts_total", **package, outcome="ok")
                            or 0) >= 3)

        samples = scrape(port)
        assert value(samples, "cloaca_sandbox_calls_total", **package, task="fine", outcome="completed") == 3
        assert value(samples, "cloaca_sandbox_calls_total", **package, task="crash", outcome="crashed") == 1
        assert value(samples, "cloaca_sandbox_calls_total", **package, task="slow", outcome="timeout") == 1
        assert value(samples, "cloaca_sandbox_call_duration_seconds_count", **package, task="fine") == 3
        assert value(samples, "cloaca_sandbox_calls_refused_total", **package, reason="resource_exhausted") == 1
        assert value(samples, "cloaca_sandbox_sandbox_restarts_total", **package, cause="crashed") == 1
        assert value(samples, "cloaca_sandbox_sandbox_restarts_total", **package, cause="timeout") == 1
        assert value(samples, "cloaca_sandbox_sandbox_starts_total", **package, outcome="ok") >= 3
        assert value(samples, "cloaca_sandbox_calls_waiting", **package) == 0
        assert value(samples, "cloaca_sandbox_sandbox_memory_limit_bytes", **package) == 512 * 2 ** 20
        assert value(samples, "cloaca_sandbox_package_loads_total", tenant="default", source="upload",
                     outcome="ok") == 1
        assert value(samples, "cloaca_sandbox_package_load_duration_seconds_count", source="upload") == 1
        assert value(samples, "cloaca_sandbox_uploads_total", tenant="default", code="OK") == 1
        assert value(samples, "cloaca_sandbox_requests_total", tenant="default", method="CallTask", code="OK") == 5
        assert value(samples, "cloaca_sandbox_requests_total", tenant="default", method="CallTask",
                     code="NOT_FOUND") == 1
        assert value(samples, "cloaca_sandbox_packages", state="ready") == 1
        assert value(samples, "cloaca_sandbox_ready") == 1
        assert value(samples, "cloaca_sandbox_event_loop_lag_seconds_count") is not None
        assert value(samples, "process_resident_memory_bytes") > 0
        # No series names a task the package does not have.
        assert not [key for key in samples if ("task", "no-such-task") in key[1]]

        client.unload("noisy")
        samples = scrape(port)
        assert not [key for key in samples if ("package", "noisy") in key[1]]  # series go with the package
        assert value(samples, "cloaca_sandbox_packages", state="ready") == 0


# --- watched directories -----------------------------------------------------------------------------

def inotify_watched_inodes() -> set[int]:
    """Inodes this process has inotify watches on (from /proc/self/fdinfo)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("inotify wd:"):
                        fields = dict(part.split(":", 1) for part in line.split()[1:])
                        inodes.add(int(fields["ino"], 16))
        except OSError:
            continue
    return inodes


def test_watched_directories_are_watched_through_inotify_and_load_files_once_settled(start_server, archives, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    server, address = start_server(packages=[watched], watch_settle=1.5)
    wait_until(lambda: watched.stat().st_ino in inotify_watched_inodes(), what="an inotify watch on the directory")
    data = archives["v1"].read_bytes()
    attempts: list[str] = []
    real_load_file = server.host.load_file

    async def counting_load_file(tenant: str, path: Path):
        attempts.append(path.name)
        return await real_load_file(tenant, path)

    server.host.load_file = counting_load_file
    with SupervisorClient(address) as client, open(watched / "demo.cloacina", "wb") as copy:
        for start in range(0, len(data), max(1, len(data) // 8)):  # a slow copy: a piece every 0.2 s
            copy.write(data[start:start + max(1, len(data) // 8)])
            copy.flush()
            time.sleep(0.2)
        copy.close()
        wait_until(lambda: [p.name for p in client.list()] == ["demo"] and client.get("demo").state == pb.Package.READY)
        assert attempts == ["demo.cloacina"]  # loaded once, complete: never while it was being written
        (watched / "demo.cloacina").unlink()
        wait_until(lambda: client.list() == [])


# --- what a tenant sees ---------------------------------------------------------------------------

LEAKY = '''
import json, os, sys
import cloaca

@cloaca.task(id="parse")
def parse(context):
    return json.loads("{not json")  # fails inside the standard library

@cloaca.task(id="where")
def where(context):
    raise RuntimeError("the runtime is at " + os.path.dirname(cloaca.__file__) + " and python at " + sys.prefix)

@cloaca.task(id="chatty")
def chatty(context):
    print("x" * 100000)
    return context
'''


def server_paths(data_dir: Path, *more: Path) -> list[str]:
    import cloaca
    import sysconfig

    paths = [str(data_dir), os.path.realpath(data_dir), sysconfig.get_paths()["stdlib"], sys.prefix, sys.base_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(cloaca.__file__))), *(str(path) for path in more)]
    return [path for path in paths if path not in ("/", "/usr", "/usr/local")] + ["/usr/local/lib", "/usr/lib"]


def test_what_a_tenant_sees_names_no_server_path(start_server, tmp_path):
    leaky = build(tmp_path / "leaky-project", "leaky", LEAKY)
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "broken.cloacina").write_bytes(b"garbage" * 100)
    server, address = start_server(packages=[watched])
    forbidden = server_paths(tmp_path / "data", watched)
    with SupervisorClient(address) as client:
        client.upload(leaky)
        parsed = client.call("leaky", "parse")
        assert parsed.error.type == "json.decoder.JSONDecodeError"
        assert 'File "<python>/json/__init__.py"' in parsed.error.traceback, parsed.error.traceback
        assert any(frame.file == "<python>/json/decoder.py" for frame in parsed.error.frames)
        where = client.call("leaky", "where").error
        assert "the runtime is at <runtime>/cloaca and python at <python>" in where.message, where.message
        broken = next(package for package in client.list() if package.name == "broken.cloacina")
        assert broken.source == "<watched>/broken.cloacina"
        seen = [parsed.error.traceback, parsed.error.message, where.message, where.traceback, broken.error,
                broken.source, *(frame.file for frame in parsed.error.frames),
                *(entry.text for entry in client.logs("leaky"))]
        for text in seen:
            assert not [path for path in forbidden if path in text], text


def test_the_cli_marks_truncated_output_with_the_bytes_dropped(tmp_path):
    leaky = build(tmp_path / "leaky-project", "leaky", LEAKY)
    daemon = Daemon(tmp_path / "data")
    try:
        assert daemon.cli("upload", str(leaky)).returncode == 0
        answer = json.loads(daemon.cli("call", "leaky", "chatty", "--json").stdout)
        dropped = answer["output"]["stdout_dropped_bytes"]
        assert dropped == 100001 - len(answer["output"]["stdout"]) > 0
        shown = daemon.cli("call", "leaky", "chatty")
        assert f"--- stdout (truncated: its first {dropped} bytes were dropped) ---" in shown.stderr
        assert f"[... {dropped} bytes dropped ...]" in shown.stderr
    finally:
        daemon.stop()
