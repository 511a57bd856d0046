"""Builds real package archives for tests, including deliberately hostile ones."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Sequence

from supervisor.fingerprint import tree_fingerprint

GUIDE_MODULE = '''
import cloaca

with cloaca.WorkflowBuilder("data_pipeline") as builder:
    builder.description("ETL pipeline for analytics data")

    @cloaca.task(id="extract")
    def extract(context):
        context.set("raw_data", [3, 1, 2])
        return context

    @cloaca.task(id="transform", dependencies=["extract"])
    def transform(context):
        context.set("clean_data", sorted(context.get("raw_data")))
        return context

    @cloaca.task(id="load", dependencies=["transform"])
    def load(context):
        context.set("loaded", len(context.get("clean_data")))
        return context
'''

GUIDE_TASKS = [
    {"id": "extract", "function": "data_pipeline:extract", "dependencies": []},
    {"id": "transform", "function": "data_pipeline:transform", "dependencies": ["extract"]},
    {"id": "load", "function": "data_pipeline:load", "dependencies": ["transform"]},
]


def manifest_dict(name: str = "data-pipeline", version: str = "1.0.0", entry_module: str = "data_pipeline",
                  tasks: list[dict[str, Any]] | None = None, fingerprint: str = "sha256:placeholder",
                  **overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format_version": "2",
        "package": {"name": name, "version": version, "fingerprint": fingerprint,
                    "targets": ["linux-x86_64"]},
        "language": "python",
        "python": {"requires_python": ">=3.10", "entry_module": entry_module},
        "tasks": GUIDE_TASKS if tasks is None else tasks,
        "created_at": "2026-01-15T10:30:00Z",
    }
    manifest.update(overrides)
    return manifest


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str = "bz2") -> bytes:
    buffer = io.BytesIO()
    mode = "w" if compression == "tar" else f"w:{compression}"
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes | str) -> tuple[tarfile.TarInfo, bytes]:
    raw = data.encode() if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size = len(raw)
    info.mode = 0o644
    return info, raw


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def package_bytes(files: dict[str, bytes | str], manifest: dict[str, Any] | str | None = None,
                  compression: str = "bz2", real_fingerprint: bool = False,
                  extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = (),
                  tmp_dir: Path | None = None) -> bytes:
    """An archive of `files` plus manifest.json (a dict, raw text, or none when None-ish)."""
    members = [file_member(name, data) for name, data in files.items()]
    if isinstance(manifest, dict) and real_fingerprint:
        assert tmp_dir is not None, "a real fingerprint needs a scratch directory"
        tree = tmp_dir / "fingerprint-tree"
        for name, data in files.items():
            path = tree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        manifest = json.loads(json.dumps(manifest))
        manifest["package"]["fingerprint"] = tree_fingerprint(tree)
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        members.insert(0, file_member("manifest.json", text))
    return tar_bytes(members + list(extra), compression)


def guide_package(module_source: str = GUIDE_MODULE, layout: str = "root", **manifest_overrides: Any) -> bytes:
    """The packaging guide's example as an archive, at the root or under src/."""
    prefix = "src/" if layout == "src" else ""
    files = {f"{prefix}data_pipeline/__init__.py": module_source}
    return package_bytes(files, manifest_dict(**manifest_overrides))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path



# --- the package.toml format (the engine's current one) --------------------------------------

FIXTURE_TASKS = '''
import cloaca

@cloaca.task(id="fixture-task1")
def task1(context):
    context.set("task1", "done")
    return context

@cloaca.task(id="fixture-task2", dependencies=["fixture-task1"])
def task2(context):
    context.set("task2", context.get("task1") + " then task2")
    return context
'''

MINIMAL_TOML = '''
[package]
name = "test-fixture-python"
version = "1.0.0"

[metadata]
workflow_name = "fixture_workflow"
'''


def toml_package(files: dict[str, bytes | str] | None = None, package_toml: str | None = MINIMAL_TOML,
                 top: str = "test-fixture-python-1.0.0", compression: str = "bz2",
                 extra: Sequence[tuple[tarfile.TarInfo, bytes | None]] = ()) -> bytes:
    """An archive as the engine's packer lays it out: files only, under one top-level directory.

    By default the engine's own test fixture: workflow/test_fixture_python/{__init__,tasks}.py.
    """
    if files is None:
        files = {"workflow/test_fixture_python/__init__.py": "",
                 "workflow/test_fixture_python/tasks.py": FIXTURE_TASKS}
    members = [file_member(f"{top}/{name}" if top else name, data) for name, data in files.items()]
    if package_toml is not None:
        members.insert(0, file_member(f"{top}/package.toml" if top else "package.toml", package_toml))
    return tar_bytes(members + list(extra), compression)
