"""Real sandboxes under every limit and failure: each answers, and the rest keeps serving."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from supervisor.config import LauncherKind, PackageLimits, SupervisorConfig
from supervisor.errors import DiscoveryError, ImportTimeoutError
from supervisor.results import (
    InvalidContextError,
    OverloadedError,
    PackageUnavailableError,
    UnknownPackageError,
    UnknownTaskError,
)
from supervisor.core import AsyncSupervisor
from supervisor.facade import Supervisor
from tests.archives import manifest_dict, package_bytes
from tests.projects import FIXTURES, build
from tests.waiting import gone, wait_gone, wait_until

MISBEHAVING = '''
import ctypes, os, subprocess, sys, time
import cloaca

@cloaca.task(id="echo")
def echo(context):
    context.set("echoed", True)
    return context

@cloaca.task(id="allocate")
def allocate(context):
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))

@cloaca.task(id="spin")
def spin(context):
    while True:
        pass

@cloaca.task(id="exit_hard")
def exit_hard(context):
    os._exit(7)

@cloaca.task(id="segfault")
def segfault(context):
    ctypes.string_at(0)

@cloaca.task(id="chained")
def chained(context):
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("could not parse the record") from exc

@cloaca.task(id="returns_set")
def returns_set(context):
    return {"ids": {1, 2, 3}}

@cloaca.task(id="noisy")
def noisy(context):
    for n in range(20000):
        print(f"out line {n}")
        print(f"err line {n}", file=sys.stderr)
    context.set("printed", 20000)
    return context

@cloaca.task(id="spawn_child")
def spawn_child(context):
    # A child in its own session, as a daemon would be: it must still die with the sandbox.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    context.set("child_pid", child.pid)
    return context

@cloaca.task(id="environment")
def environment(context):
    context.set("env", dict(os.environ))
    context.set("cwd", os.getcwd())
    context.set("sys_path", sys.path)
    context.set("listed", {path: sorted(os.listdir(path)) for path in sys.path
                           if "site-packages" in path and os.path.isdir(path)})
    return context

@cloaca.task(id="slow")
def slow(context):
    time.sleep(float(context.get("seconds", 0.5)))
    context.set("slept", True)
    return context
'''


# Imports fine until the operator's configuration says it is broken: after that every
# restart fails, so the supervisor must give up and mark the package failed.
FRAGILE = '''
import os
import cloaca
if os.environ.get("CLOACINA_VAR_FRAGILE_BROKEN"):
    raise RuntimeError("configuration is broken")

@cloaca.task(id="break_it")
def break_it(context):
    os._exit(1)
'''


def sandbox_processes(pid: int) -> list[psutil.Process]:
    """The sandbox's process and everything under it, as the host sees them."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("packages")
    return {
        "misbehaving": build(root, "misbehaving", MISBEHAVING),
        "steady": build(root, "steady", '''
            import cloaca
            @cloaca.task(id="ping")
            def ping(context):
                context.set("pong", context.get("n", 0))
                return context
        '''),
    }


# Every test of the shared supervisor runs once per way a sandbox is born (loky's per-start-method
# matrix): forked from the zygote, and spawned as a fresh interpreter.
@pytest.fixture(scope="module", params=[LauncherKind.ZYGOTE, LauncherKind.SPAWN], ids=["zygote", "spawn"])
def supervisor(request: pytest.FixtureRequest, archives: dict[str, Path]) -> Supervisor:
    config = SupervisorConfig(call_timeout=30, memory_limit_mib=256, restart_backoff_initial=0.05,
                              launcher=request.param)
    with Supervisor(config) as running:
        running.load(archives["misbehaving"])
        running.load(archives["steady"])
        yield running


def assert_others_serve(supervisor: Supervisor) -> None:
    assert supervisor.call("steady", "ping", {"n": 1}).context == {"n": 1, "pong": 1}
    assert supervisor.call("misbehaving", "echo").context == {"echoed": True}


def test_call_round_trip(supervisor):
    result = supervisor.call("misbehaving", "echo", {"a": [1, 2]})
    assert result.ok and result.status == "completed"
    assert result.context == {"a": [1, 2], "echoed": True}
    assert result.duration_ms > 0


def test_memory_limit(supervisor):
    before = supervisor.package("misbehaving").restarts
    result = supervisor.call("misbehaving", "allocate")
    assert result.error.kind == "memory_limit"
    assert "memory limit of 256 MiB" in result.error.message and "peak measured" in result.error.message
    assert_others_serve(supervisor)
    assert supervisor.package("misbehaving").restarts == before + 1


def test_call_timeout_kills_and_restarts(supervisor):
    pid = supervisor.package("misbehaving").pid
    result = supervisor.call("misbehaving", "spin", timeout=1.0)
    assert result.error.kind == "timeout"
    assert "did not finish within 1s" in result.error.message
    wait_gone(pid)
    assert_others_serve(supervisor)
    assert supervisor.package("misbehaving").pid != pid


def test_os_exit_is_a_crash_with_exit_code(supervisor):
    result = supervisor.call("misbehaving", "exit_hard")
    assert result.error.kind == "crashed"
    assert "exited with code 7" in result.error.message
    assert_others_serve(supervisor)


def test_segfault_is_a_crash_with_signal(supervisor):
    result = supervisor.call("misbehaving", "segfault")
    assert result.error.kind == "crashed"
    assert "SIGSEGV" in result.error.message
    assert_others_serve(supervisor)


def test_chained_exception_is_structured(supervisor):
    error = supervisor.call("misbehaving", "chained").error
    assert error.kind == "exception" and error.type == "ValueError"
    assert error.message == "could not parse the record"
    assert "KeyError: 'missing'" in error.traceback
    assert "The above exception was the direct cause" in error.traceback
    assert error.frames[-1].file == "misbehaving/__init__.py" and error.frames[-1].function == "chained"
    assert error.frames[-1].line > 0
    assert "/tmp/" not in error.traceback  # frames inside the package are shown relative to it


def test_non_json_result_names_key_and_type(supervisor):
    error = supervisor.call("misbehaving", "returns_set").error
    assert error.type == "cloaca.NotJSONError"
    assert "'ids'" in error.message and "set" in error.message


def test_output_is_captured_per_call_keeping_the_tail(supervisor):
    result = supervisor.call("misbehaving", "noisy")
    assert result.ok and result.context["printed"] == 20000
    limit = supervisor.config.output_limit_bytes
    assert len(result.output.stdout) <= limit and result.output.stdout.endswith("out line 19999\n")
    assert len(result.output.stderr) <= limit and result.output.stderr.endswith("err line 19999\n")
    assert result.output.stdout_dropped_bytes > 0 and result.output.stderr_dropped_bytes > 0
    assert supervisor.call("misbehaving", "echo").output.stdout == ""  # nothing leaks into the next call


def test_children_never_outlive_the_sandbox(supervisor):
    assert supervisor.call("misbehaving", "spawn_child").ok
    pid = supervisor.package("misbehaving").pid
    children = [process.pid for process in sandbox_processes(pid)[1:]]
    assert children  # the child, in its own session
    assert supervisor.call("misbehaving", "exit_hard").error.kind == "crashed"  # the sandbox dies...
    for child in children:
        wait_gone(child)  # ...and takes its child along
    assert_others_serve(supervisor)


def test_environment_is_scrubbed_and_private(supervisor, monkeypatch):
    result = supervisor.call("misbehaving", "environment")
    env, cwd, sys_path = result.context["env"], result.context["cwd"], result.context["sys_path"]
    allowed = {"PATH", "LANG", "LC_ALL", "TZ", "HOME", "TMPDIR", "USER", "LOGNAME"}
    assert {key for key in env if not key.startswith("CLOACINA_VAR_")} <= allowed
    assert env["HOME"] == "/sandbox/home" and env["TMPDIR"] == "/sandbox/tmp" and cwd == "/sandbox/tmp"
    assert sys_path[0] == "/package"  # the package's own code comes first
    runtime = {"cloaca", "sandbox_runtime", "grpc", "google", "orjson", "simdjson", "csimdjson.abi3.so",
               "pyseccomp.py", "typing_extensions.py"}
    for path, names in result.context["listed"].items():  # the runtime's directories hold the runtime only
        assert set(names) <= runtime, (path, names)


def test_environment_carries_cloacina_vars_but_not_secrets(archives, tmp_path, monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_REGION", "eu-west")
    monkeypatch.setenv("SUPERVISOR_SECRET", "hunter2")
    with Supervisor(SupervisorConfig(work_dir=tmp_path / "work")) as supervisor:
        supervisor.load(archives["misbehaving"])
        env = supervisor.call("misbehaving", "environment").context["env"]
    assert env["CLOACINA_VAR_REGION"] == "eu-west"
    assert "SUPERVISOR_SECRET" not in env


def test_concurrent_calls_across_packages_all_answered(supervisor):
    jobs = [("steady", "ping", {"n": n}) if n % 2 else ("misbehaving", "slow", {"seconds": 0.05, "n": n})
            for n in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda job: supervisor.call(*job), jobs))
    assert all(result.ok for result in results), [r.error for r in results if not r.ok]
    assert [result.context["n"] for result in results] == list(range(50))


def test_unknown_package_task_and_bad_context(supervisor):
    with pytest.raises(UnknownPackageError, match="no package named 'nope'"):
        supervisor.call("nope", "echo")
    with pytest.raises(UnknownTaskError, match="has no task 'nope'"):
        supervisor.call("steady", "nope")
    with pytest.raises(InvalidContextError, match="not valid JSON"):
        supervisor.call("steady", "ping", b"{not json")
    with pytest.raises(InvalidContextError, match="must be a JSON object"):
        supervisor.call("steady", "ping", "[1, 2]")


def test_run_workflow_drives_sandbox_calls(archives, tmp_path):
    from tests.conftest import EXAMPLES
    from supervisor.build import build_package

    archive, _, _ = build_package(EXAMPLES / "sales-report", tmp_path / "sales.cloacina")
    with Supervisor() as supervisor:
        supervisor.load(archive)
        run = supervisor.run_workflow("sales-report", None, {"large_threshold": 100})
    assert run.status == "completed"
    assert run.final_context.get("large_regions") == ["north", "west"]
    assert "| west     | 1500.00 |" in run.final_context.get("report")
    assert {task_id: outcome.status.lower() for task_id, outcome in run.tasks.items()} == {
        "load_orders": "completed", "summarize": "completed", "flag_large": "completed", "render": "completed"}


def test_overload_is_refused_at_once(archives, tmp_path):
    limits = PackageLimits(max_concurrency=1, max_queue=1)
    with Supervisor() as supervisor:
        supervisor.load(archives["misbehaving"], limits)
        started = threading.Event()

        def occupy():
            started.set()
            return supervisor.call("misbehaving", "slow", {"seconds": 3})

        with ThreadPoolExecutor(max_workers=2) as pool:
            running = [pool.submit(occupy), pool.submit(occupy)]
            started.wait()
            deadline = time.monotonic() + 30
            while supervisor.core._get("misbehaving").sandbox._admitted < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(OverloadedError, match="1 calls running and 1 waiting"):
                supervisor.call("misbehaving", "echo")
            assert all(future.result().ok for future in running)


def test_conflicting_modules_and_vendored_versions_stay_apart(tmp_path):
    source = '''
        import cloaca, six
        from common import helper
        @cloaca.task(id="which")
        def which(context):
            context.set("six", six.__version__)
            context.set("helper", helper.NAME)
            context.set("six_file", six.__file__)
            return context
    '''
    # Both packages have a top-level module `common`, and vendor different releases of six.
    old = build(tmp_path, "old-six", source, layout="src", vendor=[FIXTURES / "six-1.15.0" / "six.py"],
                files={"common/__init__.py": "", "common/helper.py": "NAME = 'old'\n"})
    new = build(tmp_path, "new-six", source, layout="src", vendor=[FIXTURES / "six-1.16.0" / "six.py"],
                files={"common/__init__.py": "", "common/helper.py": "NAME = 'new'\n"})
    with Supervisor() as supervisor:
        supervisor.load(old)
        supervisor.load(new)
        a = supervisor.call("old-six", "which").context
        b = supervisor.call("new-six", "which").context
    assert (a["six"], a["helper"]) == ("1.15.0", "old")
    assert (b["six"], b["helper"]) == ("1.16.0", "new")
    assert "/vendor/six.py" in a["six_file"] and "/vendor/six.py" in b["six_file"]


def test_vendored_copies_of_the_runtimes_own_modules_leave_the_link_alone(tmp_path):
    """A package may vendor grpc, protobuf or typing_extensions: it gets its copies, the runtime keeps its own."""
    archive = build(tmp_path, "own-copies", '''
        import cloaca
        import grpc, typing_extensions
        from google import protobuf

        @cloaca.task(id="which")
        def which(context):
            context.set("grpc", grpc.WHOSE)
            context.set("typing_extensions", typing_extensions.WHOSE)
            context.set("protobuf", protobuf.WHOSE)
            return context
    ''', blobs={"vendor/grpc/__init__.py": b"WHOSE = 'the package'\n",
                 "vendor/typing_extensions.py": b"WHOSE = 'the package'\n",
                 "vendor/google/protobuf/__init__.py": b"WHOSE = 'the package'\n"})
    with Supervisor() as supervisor:
        supervisor.load(archive)
        for _ in range(3):  # calls keep working over the runtime's own grpc and protobuf
            assert supervisor.call("own-copies", "which").context == {
                "grpc": "the package", "typing_extensions": "the package", "protobuf": "the package"}


def test_a_package_tree_changed_on_disk_is_not_started_again(archives):
    with Supervisor(SupervisorConfig(restart_backoff_initial=0.01)) as supervisor:
        supervisor.load(archives["steady"])
        root = supervisor.core._get("steady").package.root
        (root / "steady" / "__init__.py").write_text("raise SystemExit('tampered')\n")  # the host's disk changed
        os.kill(supervisor.package("steady").pid, 9)
        wait_until(lambda: supervisor.package("steady").state == "failed", what="the failed state")
        assert "changed on disk since it was loaded" in supervisor.package("steady").error
        with pytest.raises(PackageUnavailableError, match="changed on disk"):
            supervisor.call("steady", "ping")


def test_host_packages_are_invisible(tmp_path):
    archive = build(tmp_path, "peek", '''
        import cloaca
        @cloaca.task(id="try_import")
        def try_import(context):
            import importlib
            try:
                importlib.import_module(context.get("module"))
                context.set("found", True)
            except ImportError:
                context.set("found", False)
            return context
    ''')
    with Supervisor() as supervisor:
        supervisor.load(archive)
        for module in ("pytest", "pydantic", "psutil", "supervisor"):
            assert supervisor.call("peek", "try_import", {"module": module}).context["found"] is False, module
        assert supervisor.call("peek", "try_import", {"module": "json"}).context["found"] is True


def test_import_that_hangs_times_out_with_the_seeds_message(tmp_path):
    archive = package_bytes({"hang/__init__.py": "import time\nwhile True:\n    time.sleep(0.1)\n"},
                            manifest_dict(name="hang", entry_module="hang", tasks=[]))
    with Supervisor(SupervisorConfig(import_timeout=2)) as supervisor:
        with pytest.raises(ImportTimeoutError, match=r"^Python workflow import timed out after 2s$"):
            supervisor.load(archive)
        assert supervisor.packages() == []
        assert list(supervisor.staging_dir.iterdir()) == []


def test_import_error_and_manifest_mismatch_refuse_the_load(tmp_path):
    broken = package_bytes({"broken/__init__.py": "import cloaca\nraise RuntimeError('bad config')\n"},
                           manifest_dict(name="broken", entry_module="broken", tasks=[]))
    mismatched = package_bytes({"mism/__init__.py": "import cloaca\n@cloaca.task(id='real')\ndef real(c): pass\n"},
                               manifest_dict(name="mism", entry_module="mism",
                                             tasks=[{"id": "ghost", "function": "mism:ghost"}]))
    with Supervisor() as supervisor:
        with pytest.raises(DiscoveryError, match="RuntimeError: bad config") as caught:
            supervisor.load(broken)
        assert 'File "broken/__init__.py", line 2' in caught.value.traceback
        with pytest.raises(DiscoveryError, match="'ghost' is in the manifest.*'real' is defined by the module"):
            supervisor.load(mismatched)
        assert supervisor.packages() == [] and list(supervisor.staging_dir.iterdir()) == []


def test_sandbox_that_keeps_dying_at_start_is_marked_failed(tmp_path, monkeypatch):
    archive = build(tmp_path, "fragile", FRAGILE)
    config = SupervisorConfig(max_start_failures=2, restart_backoff_initial=0.01)
    with Supervisor(config) as supervisor:
        supervisor.load(archive)
        monkeypatch.setenv("CLOACINA_VAR_FRAGILE_BROKEN", "1")
        assert supervisor.call("fragile", "break_it").error.kind == "crashed"
        wait_until(lambda: supervisor.package("fragile").state == "failed", what="the failed state")
        info = supervisor.package("fragile")
        assert "configuration is broken" in info.error
        with pytest.raises(PackageUnavailableError, match="has failed: .*configuration is broken"):
            supervisor.call("fragile", "break_it")


def test_unload_and_close_leave_no_process_behind(archives, tmp_path):
    supervisor = Supervisor()
    supervisor.load(archives["misbehaving"])
    supervisor.load(archives["steady"])
    assert supervisor.call("misbehaving", "spawn_child").ok
    pids = [process.pid for info in supervisor.packages() for process in sandbox_processes(info.pid)]
    supervisor.unload("steady")
    with pytest.raises(UnknownPackageError):
        supervisor.call("steady", "ping")
    supervisor.close()
    for pid in pids:
        assert gone(pid), pid
    assert not supervisor.work_dir.exists()


def test_replacing_a_package_keeps_serving(archives, tmp_path):
    with Supervisor() as supervisor:
        supervisor.load(archives["steady"])
        first = supervisor.package("steady").pid
        supervisor.load(archives["steady"])
        assert supervisor.package("steady").pid != first
        assert supervisor.call("steady", "ping", {"n": 5}).context["pong"] == 5
        wait_gone(first)  # the old sandbox had nothing running, so it drains at once


def test_async_supervisor(archives):
    import asyncio

    async def main():
        async with AsyncSupervisor() as supervisor:
            await supervisor.load(archives["steady"])
            results = await asyncio.gather(*(supervisor.call("steady", "ping", {"n": n}) for n in range(5)))
            return [result.context["pong"] for result in results]

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]


def test_generated_protocol_code_is_current():
    import subprocess
    import sys

    from tests.conftest import ROOT

    check = subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--check"],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"run `python protos/generate.py`: {check.stderr}"
