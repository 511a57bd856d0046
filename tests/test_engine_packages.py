"""Packages written for the engine, loaded and run in real sandboxes, as its packer builds them.

Pins the loader's steps (§3.1 of the cloaca reference) in our sandboxes: the
workflow name of module-level tasks, builder blocks, what is refused after
the import, the wheel-only names, and the task contract across the boundary.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from supervisor import errors
from supervisor.client import SupervisorClient
from supervisor.results import InvalidContextError
from supervisor.edge.server import ServiceConfig
from supervisor.facade import Supervisor
from tests.servers import ServerThread
from tests.archives import MINIMAL_TOML, toml_package


def package(tasks_source: str, manifest: str = MINIMAL_TOML) -> bytes:
    return toml_package({"workflow/test_fixture_python/__init__.py": "",
                         "workflow/test_fixture_python/tasks.py": textwrap.dedent(tasks_source)}, manifest)


@pytest.fixture(scope="module")
def supervisor() -> Supervisor:
    with Supervisor() as running:
        yield running


def test_the_engines_fixture_loads_under_its_workflow_name_and_runs(supervisor):
    info = supervisor.load(toml_package())
    try:
        assert info.workflows == ["fixture_workflow"] and sorted(info.tasks) == ["fixture-task1", "fixture-task2"]
        assert {t.workflow for t in supervisor.tasks("test-fixture-python")} == {"fixture_workflow"}
        run = supervisor.run_workflow("test-fixture-python", "fixture_workflow", {})
        assert run.status == "Completed"
        assert run.final_context.to_dict() == {"task1": "done", "task2": "done then task2"}
    finally:
        supervisor.unload("test-fixture-python")


def test_builder_blocks_keep_working_beside_module_level_tasks(supervisor):
    supervisor.load(package('''
        import cloaca

        with cloaca.WorkflowBuilder("legacy_pipeline") as builder:
            builder.description("the older docs' shape")

            @cloaca.task(id="extract")
            def extract(context):
                context.set("rows", [1, 2])
                return context

        @cloaca.task(id="loose")
        def loose(context):
            return None
    '''))
    try:
        discovery = supervisor.discovery("test-fixture-python")
        assert {w.name: w.tasks for w in discovery.workflows} == {"legacy_pipeline": ["extract"],
                                                                  "fixture_workflow": ["loose"]}
        assert supervisor.run_workflow("test-fixture-python", "legacy_pipeline").final_context.get("rows") == [1, 2]
        assert supervisor.run_workflow("test-fixture-python", "fixture_workflow", {"a": 1}).final_context.to_dict() \
            == {"a": 1}
    finally:
        supervisor.unload("test-fixture-python")


@pytest.mark.parametrize("source, error, match", [
    ('''
        import cloaca
        graph = cloaca.ComputationGraphBuilder("scores", graph={"score": {}})
        @cloaca.task(id="t")
        def t(context):
            return context
     ''', errors.UnsupportedFeatureError,
     r"declares a computation graph \(ComputationGraphBuilder\('scores'\)\); this host does not run computation graphs"),
    ('''
        import cloaca
        cloaca.constructor("pg_pool", "registry/postgres", "connect")
        @cloaca.task(id="t")
        def t(context):
            return context
     ''', errors.UnsupportedFeatureError, r"declares a constructor \(cloaca.constructor\(id='pg_pool'\)"),
    ('''
        import cloaca
        @cloaca.reactor(name="ticker", accumulators=["ticks"])
        class Ticker:
            pass
     ''', errors.UnsupportedFeatureError, "declares a reactor"),
    ("import cloaca\nVALUE = 1\n", errors.EmptyPackageError,
     "Empty package: importing 'test_fixture_python.tasks' registered no tasks"),
    ('''
        import cloaca
        @cloaca.task(id="b", dependencies=["ghost"])
        def b(context):
            return context
     ''', errors.TaskGraphError, "Missing dependency: task 'b' depends on 'ghost' which is not registered"),
    ('''
        import cloaca
        for name in ("one", "two"):
            with cloaca.WorkflowBuilder(name):
                cloaca.task(id="same")(lambda context: context)
     ''', errors.DuplicateTaskError, "task id 'same' is declared in workflows 'one' and 'two'"),
    ('''
        import cloaca
        RUNNER = cloaca.DefaultRunner  # wheel only: absent inside the engine's server, and here
     ''', errors.DiscoveryError, "module 'cloaca' has no attribute 'DefaultRunner': inside a sandbox the host is"),
])
def test_what_the_import_declares_is_judged_at_load(supervisor, source, error, match):
    with pytest.raises(error, match=match):
        supervisor.load(package(source))
    assert supervisor.packages() == []


def test_task_contract_across_the_sandbox_boundary(supervisor):
    supervisor.load(package('''
        import sys
        import cloaca

        ATTEMPTS = {"n": 0}

        def report(task_id, context):
            print(f"done {task_id} {sorted(context.to_dict())}", file=sys.stderr)

        @cloaca.task(id="mutates_returns_none")
        def mutates_returns_none(context):
            context.set("dropped", True)

        @cloaca.task(id="deferred", on_success=report)
        def deferred(context, handle):
            import os, threading
            flag = os.path.join(os.environ["TMPDIR"], context.get("flag"))
            threading.Timer(0.1, lambda: open(flag, "w").close()).start()  # the condition turns true later
            handle.defer_until(lambda: os.path.exists(flag), poll_interval_ms=20)
            context.set("runner_names", [n for n in ("DefaultRunner", "WorkflowResult") if hasattr(cloaca, n)])
            return context

        @cloaca.task(id="counts")
        def counts(context):
            ATTEMPTS["n"] += 1
            context.set("calls", ATTEMPTS["n"])
            return context
    '''))
    try:
        assert supervisor.call("test-fixture-python", "mutates_returns_none", {"a": 1}).context == {"a": 1}
        deferred = supervisor.call("test-fixture-python", "deferred", {"flag": "go"})
        assert deferred.ok and deferred.context["runner_names"] == []
        assert "done deferred ['flag', 'runner_names']" in deferred.output.stderr
        calls = [supervisor.call("test-fixture-python", "counts").context["calls"] for _ in range(2)]
        assert calls == [1, 2]  # module state lives as long as the sandbox
    finally:
        supervisor.unload("test-fixture-python")


def test_workflow_params_are_bound_by_the_supervisors_engine(supervisor):
    supervisor.load(package('''
        import cloaca

        @cloaca.workflow_params(batch_size=(int, 50), region=str)
        @cloaca.task(id="plan")
        def plan(context):
            context.set("plan", f"{context.get('region')}:{context.get('batch_size')}")
            return context
    '''))
    try:
        run = supervisor.run_workflow("test-fixture-python", None, {"region": "eu"})
        assert run.final_context.get("plan") == "eu:50"
        with pytest.raises(InvalidContextError, match="required param 'region'"):
            supervisor.run_workflow("test-fixture-python", None, {})
    finally:
        supervisor.unload("test-fixture-python")


def test_the_service_lists_and_runs_the_workflow_by_its_engine_name(tmp_path: Path):
    archive = tmp_path / "python-workflow.cloacina"
    archive.write_bytes(toml_package())
    server = ServerThread(ServiceConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", memory_limit_mib=512))
    address = server.start()
    try:
        with SupervisorClient(address) as client:
            uploaded = client.upload(archive)
            assert uploaded.name == "test-fixture-python"
            listing = client.tasks("test-fixture-python")
            assert [w.name for w in listing.workflows] == ["fixture_workflow"]
            assert {t.workflow for t in listing.tasks} == {"fixture_workflow"}
            run = client.run("test-fixture-python", "fixture_workflow", {})
            assert [(o.task_id, o.attempts) for o in run.tasks] == [("fixture-task1", 1), ("fixture-task2", 1)]
            assert json.loads(run.final_context_json) == {"task1": "done", "task2": "done then task2"}
    finally:
        server.stop(grace=1)


def test_a_deferred_task_frees_its_sandbox_slot_while_it_waits():
    archive = package('''
        import threading
        import cloaca

        GO = threading.Event()

        @cloaca.task(id="wait_for_go")
        def wait_for_go(context, handle):
            handle.defer_until(GO.is_set, poll_interval_ms=10)
            context.set("resumed", handle.is_slot_held())
            return context

        @cloaca.task(id="go")
        def go(context):
            GO.set()
            return context
    ''')
    from concurrent.futures import ThreadPoolExecutor

    from supervisor.config import PackageLimits, SupervisorConfig

    # One slot: "go" can only run while "wait_for_go" has given its slot back.
    with Supervisor(SupervisorConfig(call_timeout=60)) as supervisor:
        supervisor.load(archive, PackageLimits(max_concurrency=1, max_queue=4))
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(supervisor.call, "test-fixture-python", "wait_for_go")
            assert supervisor.call("test-fixture-python", "go").ok
            result = waiting.result(timeout=60)
        assert result.ok and result.context == {"resumed": True}
