"""The README's walk-through and embedding example, run as written."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT
from tests.test_cli_service import Daemon, free_port

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_setup_commands_are_the_ones_ci_runs():
    setup = code_blocks(section("## Set up"), "sh")[0]
    assert "cloaca-sandbox serve --packages examples/dist" in setup
    assert "pip install -e '.[test]' && python -m pytest" in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[test]'" in ci and "python -m pytest" in ci


def test_walk_through(tmp_path):
    serve_block, commands_block = code_blocks(section("## Walk-through"), "sh")[:2]
    workdir = tmp_path / "repo"
    shutil.copytree(EXAMPLES, workdir / "examples")
    address = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "CLOACA_SANDBOX_LISTEN": address, "CLOACA_SANDBOX_SERVER": address,
           "CLOACA_SANDBOX_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    serve_line = serve_block.strip().splitlines()[-1]
    log = open(tmp_path / "serve.log", "wb")
    server = subprocess.Popen(["bash", "-c", f"exec {serve_line}"], cwd=workdir, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        daemon = Daemon.__new__(Daemon)  # reuse its health wait on the server started above
        daemon.address, daemon.process, daemon.log = address, server, tmp_path / "serve.log"
        daemon.wait_serving()
        outputs = []
        for line in commands_block.strip().splitlines():
            command, _, comment = line.partition("  #")
            expected = 1 if "exits 1" in comment else 0
            ran = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True,
                                 timeout=300)
            assert ran.returncode == expected, f"{command}\n{ran.stdout}\n{ran.stderr}"
            outputs.append(ran.stdout + ran.stderr)
        assert "data-pipeline" in outputs[0] and "ready" in outputs[0]
        assert "KeyError: 'amount'" in outputs[6] and 'File "sales_report/__init__.py"' in outputs[6]
        assert '"large_regions": ["north", "west"]' in outputs[7]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0


def test_embedding_example(tmp_path):
    example = code_blocks(section("## Embedding the supervisor"), "python")[0]
    shutil.copy(EXAMPLES / "dist" / "data-pipeline-1.0.0.cloacina", tmp_path)
    ran = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    assert "ready" in ran.stdout and "Completed" in ran.stdout


def test_bundled_example_archive_is_current(tmp_path):
    from supervisor.build import build_package
    from supervisor.inspection import inspect_archive

    _, manifest, _ = build_package(EXAMPLES / "data-pipeline", tmp_path / "fresh.cloacina")
    bundled = inspect_archive(EXAMPLES / "dist" / "data-pipeline-1.0.0.cloacina")
    assert bundled.manifest.package.fingerprint == manifest.package.fingerprint, \
        "rebuild it: cloaca-sandbox package examples/data-pipeline -o examples/dist/data-pipeline-1.0.0.cloacina"
    assert bundled.manifest.tasks == manifest.tasks
