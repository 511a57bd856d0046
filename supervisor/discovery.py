"""Discovery: what a package's entry module declares, and whether it matches the manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from supervisor.errors import DiscoveryError, ImportTimeoutError
from supervisor.interpreter import build_runtime_dir, sandbox_command, sandbox_environment
from supervisor.manifest import Manifest
from supervisor.package import ExtractedPackage

DEFAULT_IMPORT_TIMEOUT = 60.0


class DiscoveredTask(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    function: str
    dependencies: list[str] = Field(default_factory=list)
    is_async: bool = False
    docstring: str = ""
    workflow: str
    retry: dict[str, Any] = Field(default_factory=dict)
    trigger_rule: dict[str, Any] = Field(default_factory=lambda: {"type": "always"})


class DiscoveredWorkflow(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    tasks: list[str]


class DiscoveredTrigger(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    function: str
    workflow: str
    options: dict[str, Any] = Field(default_factory=dict)


class Discovery(BaseModel):
    model_config = ConfigDict(frozen=True)
    tasks: list[DiscoveredTask]
    workflows: list[DiscoveredWorkflow]
    triggers: list[DiscoveredTrigger] = Field(default_factory=list)

    def task(self, task_id: str) -> DiscoveredTask | None:
        return next((task for task in self.tasks if task.id == task_id), None)


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def import_timeout_message(seconds: float) -> str:
    return f"Python workflow import timed out after {format_seconds(seconds)}"


def discovery_from_document(document: dict[str, Any]) -> Discovery:
    """Turn a sandbox's discovery answer into a Discovery or a DiscoveryError."""
    if not document.get("ok"):
        error = document.get("error") or {}
        raise DiscoveryError(
            f"importing the entry module failed: {error.get('type', 'Error')}: {error.get('message', '')}",
            error.get("traceback", ""),
        )
    return Discovery.model_validate(document["discovery"])


def discover_in_subprocess(package: ExtractedPackage, timeout: float = DEFAULT_IMPORT_TIMEOUT) -> Discovery:
    """Import the package's entry module in a fresh, isolated interpreter.

    For the command line; the supervisor's sandboxes discover over their
    own channel. The interpreter's whole process group is killed on timeout.
    """
    with tempfile.TemporaryDirectory(prefix="cloaca-discover-") as scratch:
        scratch_dir = Path(scratch)
        home, tmp = scratch_dir / "home", scratch_dir / "tmp"
        home.mkdir()
        tmp.mkdir()
        output = scratch_dir / "discovery.json"
        command = sandbox_command(package.import_paths, build_runtime_dir(scratch_dir), "sandbox.discover",
                                  [package.entry_module, str(output)])
        process = subprocess.Popen(command, cwd=tmp, env=sandbox_environment(home, tmp),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ImportTimeoutError(import_timeout_message(timeout)) from None
        finally:
            _kill_group(process)
        if not output.exists():
            detail = stderr.decode(errors="replace").strip()[-2000:]
            raise DiscoveryError(
                f"the discovery interpreter exited with code {process.returncode} before answering", detail)
        return discovery_from_document(json.loads(output.read_text(encoding="utf-8")))


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def compare_with_manifest(manifest: Manifest, discovery: Discovery) -> None:
    """Fail unless the module's tasks and dependencies are exactly the manifest's."""
    declared = {task.id: sorted(task.dependencies) for task in manifest.tasks}
    found = {task.id: sorted(task.dependencies) for task in discovery.tasks}
    problems = []
    for task_id in declared.keys() - found.keys():
        problems.append(f"task {task_id!r} is in the manifest but the module does not define it")
    for task_id in found.keys() - declared.keys():
        problems.append(f"task {task_id!r} is defined by the module but missing from the manifest")
    for task_id in sorted(declared.keys() & found.keys()):
        if declared[task_id] != found[task_id]:
            problems.append(f"task {task_id!r} dependencies differ: manifest {declared[task_id]}, "
                            f"module {found[task_id]}")
    if problems:
        raise DiscoveryError("package does not match its manifest: " + "; ".join(sorted(problems)))
