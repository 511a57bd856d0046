"""`cloaca-sandbox package` and `inspect`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import sys
import textwrap
from pathlib import Path

import pytest

from tests.archives import GUIDE_TASKS, manifest_dict, package_bytes
from tests.conftest import EXAMPLES, ROOT

# The packaging guide's project, as a reader of the guide would write it.
GUIDE_PYPROJECT = """
[project]
name = "data-pipeline"
version = "1.0.0"
description = "ETL pipeline for analytics"
requires-python = ">=3.10"
dependencies = []

[tool.cloaca]
entry_module = "data_pipeline"
"""

GUIDE_INIT = '''
import cloaca

def fetch_from(source):
    return [{"source": source, "value": n} for n in (3, 1, 2)]

def clean(raw):
    return sorted(row["value"] for row in raw)

def write_to(dest, rows):
    return {"dest": dest, "count": len(rows)}

with cloaca.WorkflowBuilder("data_pipeline") as builder:
    builder.description("ETL pipeline for analytics data")

    @cloaca.task(id="extract")
    def extract(context):
        source = cloaca.var("DATA_SOURCE")
        context.set("raw_data", fetch_from(source))
        return context

    @cloaca.task(id="transform", dependencies=["extract"])
    def transform(context):
        raw = context.get("raw_data")
        context.set("clean_data", clean(raw))
        return context

    @cloaca.task(id="load", dependencies=["transform"])
    def load(context):
        dest = cloaca.var("WAREHOUSE_URL")
        context.set("written", write_to(dest, context.get("clean_data")))
        return context
'''


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def make_project(root: Path, init: str = GUIDE_INIT, pyproject: str = GUIDE_PYPROJECT,
                 extra: dict[str, str] | None = None) -> Path:
    (root / "data_pipeline").mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject)
    (root / "data_pipeline" / "__init__.py").write_text(textwrap.dedent(init))
    for name, text in (extra or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_guide_project_packages_inspects_and_runs(tmp_path):
    project = make_project(tmp_path / "my-workflow")
    built = cli("package", str(project), "--json")
    assert built.returncode == 0, built.stderr
    archive = Path(json.loads(built.stdout)["archive"])
    assert archive == project / "dist" / "data-pipeline-1.0.0.cloacina"
    assert archive.read_bytes()[:3] == b"BZh"

    inspected = cli("inspect", str(archive), "--json")
    assert inspected.returncode == 0, inspected.stderr
    report = json.loads(inspected.stdout)
    assert report["manifest"]["tasks"] == GUIDE_TASKS
    assert report["manifest"]["package"]["fingerprint"] == report["fingerprint"]
    assert report["warnings"] == []
    assert [w["name"] for w in report["discovery"]["workflows"]] == ["data_pipeline"]

    # The guide's own "verify before packaging" snippet, in a fresh interpreter.
    check = textwrap.dedent("""
        import cloaca, data_pipeline
        runner = cloaca.DefaultRunner(":memory:")
        try:
            result = runner.execute("data_pipeline", cloaca.Context())
            assert result.status == "completed" and result.status == "Completed", result.status
            print(result.final_context.to_json())
        finally:
            runner.shutdown()
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(ROOT)]),
           "CLOACINA_VAR_DATA_SOURCE": "postgres://analytics", "CLOACINA_VAR_WAREHOUSE_URL": "s3://wh"}
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["written"] == {"dest": "s3://wh", "count": 3}


def test_inspect_human_output_lists_tasks(tmp_path):
    archive = tmp_path / "dp.cloacina"
    assert cli("package", str(EXAMPLES / "data-pipeline"), "-o", str(archive)).returncode == 0
    shown = cli("inspect", str(archive))
    assert shown.returncode == 0, shown.stderr
    assert "data-pipeline 1.0.0" in shown.stdout
    assert "transform <- extract" in shown.stdout


def test_example_with_vendored_library_packages_and_runs_in_isolation(tmp_path):
    archive = tmp_path / "sales.cloacina"
    built = cli("package", str(EXAMPLES / "sales-report"), "-o", str(archive), "--json")
    assert built.returncode == 0, built.stderr
    report = json.loads(cli("inspect", str(archive), "--json").stdout)
    assert {t["id"] for t in report["discovery"]["tasks"]} == {"load_orders", "summarize", "flag_large", "render"}
    assert next(t for t in report["discovery"]["tasks"] if t["id"] == "summarize")["is_async"] is True


@pytest.mark.parametrize("example", ["data-pipeline", "sales-report"])
def test_examples_run_with_default_runner(example):
    project = EXAMPLES / example
    module = example.replace("-", "_")
    check = (f"import cloaca, {module}\n"
             f"r = cloaca.DefaultRunner(':memory:')\n"
             f"res = r.execute('{module}', cloaca.Context({{'large_threshold': 100}}))\n"
             f"r.shutdown()\n"
             f"assert res.status == 'completed', (res.status, res.error)\n"
             f"print(res.final_context.to_json())\n")
    paths = [str(project), str(project / "vendor"), str(ROOT)]
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    assert ran.returncode == 0, ran.stderr
    final = json.loads(ran.stdout)
    if module == "sales_report":
        assert final["large_regions"] == ["north", "west"]
        assert "| west     | 1500.00 |" in final["report"]
    else:
        assert final["loaded"] == {"destination": "memory://warehouse", "rows": 2}


def test_package_refuses_what_the_loader_refuses(tmp_path):
    project = make_project(tmp_path / "p", extra={"vendor/pickle.py": "# shadows the stdlib\n"})
    result = cli("package", str(project))
    assert result.returncode == 1
    assert "[stdlib_shadowing]" in result.stderr and "'pickle' in vendor/" in result.stderr
    assert not (project / "dist").exists()


def test_package_reports_import_error_with_traceback(tmp_path):
    project = make_project(tmp_path / "p", init="import cloaca\nimport definitely_not_installed\n")
    result = cli("package", str(project))
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr and "definitely_not_installed" in result.stderr
    assert 'File "data_pipeline/__init__.py", line 2' in result.stderr
    assert "sandbox/discover.py" not in result.stderr  # the runtime's own frames are trimmed


def test_package_needs_entry_module(tmp_path):
    project = make_project(tmp_path / "p", pyproject="[project]\nname='x'\nversion='1'\n")
    result = cli("package", str(project))
    assert result.returncode == 1 and "[tool.cloaca] entry_module" in result.stderr


def test_inspect_reports_manifest_disagreeing_with_module(tmp_path):
    tasks = [{"id": "extract", "function": "data_pipeline:extract", "dependencies": []},
             {"id": "ghost", "function": "data_pipeline:ghost", "dependencies": []},
             {"id": "transform", "function": "data_pipeline:transform", "dependencies": []},
             {"id": "load", "function": "data_pipeline:load", "dependencies": ["transform"]}]
    source = GUIDE_INIT.replace('@cloaca.task(id="load"', '@cloaca.task(id="unlisted")\n    def unlisted(c):\n'
                                '        pass\n\n    @cloaca.task(id="load"')
    archive = tmp_path / "bad.cloacina"
    archive.write_bytes(package_bytes({"data_pipeline/__init__.py": source}, manifest_dict(tasks=tasks)))
    result = cli("inspect", str(archive), "--json")
    assert result.returncode == 1
    message = json.loads(result.stdout)["error"]["message"]
    assert "task 'ghost' is in the manifest but the module does not define it" in message
    assert "task 'unlisted' is defined by the module but missing from the manifest" in message
    assert "task 'transform' dependencies differ: manifest [], module ['extract']" in message


def test_inspect_import_timeout_uses_the_seeds_message(tmp_path):
    archive = tmp_path / "slow.cloacina"
    archive.write_bytes(package_bytes({"data_pipeline/__init__.py": "import time\nwhile True:\n    time.sleep(1)\n"},
                                      manifest_dict(tasks=[])))
    result = cli("inspect", str(archive), "--import-timeout", "1.5")
    assert result.returncode == 1
    assert "[import_timeout]: Python workflow import timed out after 1.5s" in result.stderr


def test_inspect_refuses_non_archive(tmp_path):
    bogus = tmp_path / "x.cloacina"
    bogus.write_text("hello")
    result = cli("inspect", str(bogus))
    assert result.returncode == 1 and "[not_an_archive]" in result.stderr


# --- the package.toml format --------------------------------------------------------------

ETL_TOML = """
[package]
name = "etl"
version = "2.0.0"

[metadata]
workflow_name = "etl_flow"
"""

ETL_TASKS = '''
import cloaca
import helperlib

@cloaca.task(id="extract")
def extract(context):
    context.set("rows", [helperlib.X])
    return context

@cloaca.task(id="load", dependencies=["extract"])
def load(context):
    context.set("loaded", len(context.get("rows")))
    return context
'''


def make_toml_project(root: Path, tasks: str = ETL_TASKS, package_toml: str = ETL_TOML,
                      extra: dict[str, str] | None = None) -> Path:
    files = {"package.toml": package_toml, "workflow/etl/__init__.py": "", "workflow/etl/tasks.py": tasks,
             "vendor/helperlib.py": "X = 7\n", **(extra or {})}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_package_toml_project_builds_as_the_engines_packer_does(tmp_path):
    project = make_toml_project(tmp_path / "etl", extra={
        "workflow/etl/__pycache__/tasks.cpython-311.pyc": "", "target/debug/junk": "", ".git/config": "",
        "dist/old-1.0.0.cloacina": "", "README.md": "# etl\n"})
    built = cli("package", str(project), "--json")
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    archive = Path(report["archive"])
    assert archive == project / "dist" / "etl-2.0.0.cloacina" and report["format"] == "package.toml"
    assert archive.read_bytes()[:3] == b"BZh"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert all(m.isfile() for m in members)  # files only, as fidius packs
        assert sorted(m.name for m in members) == [
            "etl-2.0.0/README.md", "etl-2.0.0/package.toml", "etl-2.0.0/vendor/helperlib.py",
            "etl-2.0.0/workflow/etl/__init__.py", "etl-2.0.0/workflow/etl/tasks.py"]
        written = tar.extractfile("etl-2.0.0/package.toml").read().decode()
    # The resolved manifest, every default written out, as `cloacinactl package pack` writes it.
    assert 'entry_module = "etl.tasks"' in written and 'language = "python"' in written
    assert 'interface = "cloacina-workflow-plugin"' in written and "interface_version = 1" in written

    inspected = cli("inspect", str(archive), "--json")
    assert inspected.returncode == 0, inspected.stderr
    details = json.loads(inspected.stdout)
    assert (details["format"], details["workflow_name"]) == ("package.toml", "etl_flow")
    assert [w["name"] for w in details["discovery"]["workflows"]] == ["etl_flow"]
    shown = cli("inspect", str(archive)).stdout
    assert "format:          package.toml" in shown and "workflow etl_flow" in shown and "load <- extract" in shown

    again = tmp_path / "again.cloacina"
    assert cli("package", str(project), "-o", str(again)).returncode == 0
    assert again.read_bytes() == archive.read_bytes()  # builds repeat


@pytest.mark.parametrize("package_toml, tasks, code, message", [
    (ETL_TOML + "[[metadata.triggers]]\nname = 'x'\n", ETL_TASKS, "invalid_manifest", "unknown field `triggers`"),
    (ETL_TOML + 'graph_name = "g"\n', ETL_TASKS, "unsupported_feature", "computation graph 'g'"),
    (ETL_TOML, "import cloaca\ncloaca.ComputationGraphBuilder('g', graph={})\n"
               "@cloaca.task(id='t')\ndef t(c):\n    return c\n", "unsupported_feature", "ComputationGraphBuilder('g')"),
    (ETL_TOML, "import cloaca\n", "empty_package", "registered no tasks"),
])
def test_package_toml_project_refused_for_what_the_loader_refuses(tmp_path, package_toml, tasks, code, message):
    project = make_toml_project(tmp_path / "p", tasks=tasks, package_toml=package_toml)
    result = cli("package", str(project))
    assert result.returncode == 1 and f"[{code}]" in result.stderr and message in result.stderr
    assert not (project / "dist").exists()


def test_bundled_package_toml_example_is_current(tmp_path):
    fresh = tmp_path / "fresh.cloacina"
    assert cli("package", str(EXAMPLES / "visits-report"), "-o", str(fresh)).returncode == 0
    assert fresh.read_bytes() == (EXAMPLES / "dist" / "visits-report-1.0.0.cloacina").read_bytes(), \
        "rebuild it: cloaca-sandbox package examples/visits-report -o examples/dist/visits-report-1.0.0.cloacina"


def test_package_toml_example_runs_locally_as_the_loader_imports_it():
    check = textwrap.dedent("""
        import cloaca
        from cloaca.loading import import_package
        imported = import_package("visits_report.tasks", "visits_report", "visits-report")
        assert imported.problems == (), imported.problems
        with cloaca.DefaultRunner(":memory:") as runner:
            result = runner.execute("visits_report", cloaca.Context({"busy_threshold": 150}))
        assert result.status == "Completed", (result.status, result.error_message)
        print(result.final_context.to_json())
    """)
    paths = [str(EXAMPLES / "visits-report" / "workflow"), str(ROOT)]
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    assert ran.returncode == 0, ran.stderr
    final = json.loads(ran.stdout)
    assert final["totals"] == {"/": 200, "/docs": 15, "/pricing": 40} and final["busy"] == ["/"]
    assert final["alert"] == "busy pages: /" and final["summary"] == "255 visits on 3 pages"
