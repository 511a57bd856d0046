"""`cloaca-sandbox package`: build a .cloacina archive from a project directory, in either format.

- A project with a `package.toml` (the engine's current format: `package.toml`,
  `workflow/`, optional `vendor/`) becomes what the engine's packer makes: a
  bzip2 tar of files under one top-level `<name>-<version>/` directory, with
  the resolved `package.toml` (every default the engine infers written out).
- A project with `pyproject.toml` and `[tool.cloaca] entry_module` (the seeds'
  packaging guide: the module at the root or under `src/`, optional
  `vendor/`) becomes a manifest.json format "2" archive; its tasks are
  discovered by importing the entry module, so the manifest lists what
  really exists.

Either way the built tree passes every loader check, including the import in
a separate interpreter, before the archive is written.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomllib

from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery
from supervisor.errors import MissingSourceDirError, PackageError
from supervisor.fingerprint import MANIFEST_NAME, tree_fingerprint
from supervisor.manifest import FINGERPRINT_PLACEHOLDER, Manifest, ManifestError, parse_manifest
from supervisor.package import check_discovery, check_package
from supervisor.package_toml import PACKAGE_TOML, SOURCE_DIR, PackageToml, parse_package_toml
from supervisor.core import discover_package

ALL_TARGETS = ["linux-x86_64", "linux-arm64", "macos-x86_64", "macos-arm64"]
_SKIPPED = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store",
            # also left out by the engine's packer (fidius, cloacinactl package pack)
            "target", "node_modules", ".venv"}


class ProjectError(PackageError):
    """The project directory cannot be packaged as it is."""

    code = "invalid_project"


def read_project(project_dir: Path) -> dict[str, Any]:
    pyproject = project_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ProjectError(f"{project_dir} has neither a package.toml (the engine's format) nor a pyproject.toml "
                           "with [tool.cloaca]")
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError(f"pyproject.toml is not valid TOML: {exc}") from None
    project = data.get("project") or {}
    entry_module = (data.get("tool") or {}).get("cloaca", {}).get("entry_module")
    if not entry_module:
        raise ProjectError("pyproject.toml needs [tool.cloaca] entry_module = \"your_module\"")
    for key in ("name", "version"):
        if not project.get(key):
            raise ProjectError(f"pyproject.toml needs [project] {key}")
    return {
        "name": project["name"],
        "version": str(project["version"]),
        "description": project.get("description"),
        "requires_python": project.get("requires-python", ">=3.10"),
        "entry_module": entry_module,
    }


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {name for name in names if name in _SKIPPED or name.endswith((".pyc", ".pyo", ".cloacina"))}


def stage_project(project_dir: Path, info: dict[str, Any], stage: Path) -> None:
    """Copy what the package needs into `stage`, in the archive's layout."""
    top = info["entry_module"].split(".")[0]
    if (project_dir / "src").is_dir():
        shutil.copytree(project_dir / "src", stage / "src", ignore=_ignore, symlinks=True)
        if (project_dir / "requirements.lock").is_file():
            shutil.copy2(project_dir / "requirements.lock", stage / "requirements.lock")
    elif (project_dir / top).is_dir():
        shutil.copytree(project_dir / top, stage / top, ignore=_ignore, symlinks=True)
    elif (project_dir / f"{top}.py").is_file():
        shutil.copy2(project_dir / f"{top}.py", stage / f"{top}.py")
    else:
        raise ProjectError(f"entry module {info['entry_module']!r}: neither {top}/ nor {top}.py nor src/ "
                           f"exists in {project_dir}")
    if (project_dir / "vendor").is_dir():
        shutil.copytree(project_dir / "vendor", stage / "vendor", ignore=_ignore, symlinks=True)


def _targets(stage: Path) -> list[str]:
    """Pure-Python packages run anywhere; compiled code only where it was built."""
    if any(path.suffix in (".so", ".pyd", ".dylib") for path in stage.rglob("*")):
        system = {"Darwin": "macos"}.get(platform.system(), platform.system().lower())
        machine = {"aarch64": "arm64", "AMD64": "x86_64"}.get(platform.machine(), platform.machine())
        return [f"{system}-{machine}"]
    return list(ALL_TARGETS)


def _write_manifest(stage: Path, manifest: Manifest) -> None:
    (stage / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")


def _manifest_for(info: dict[str, Any], fingerprint: str, targets: list[str], tasks: list[dict[str, Any]]) -> Manifest:
    raw = {
        "format_version": "2",
        "package": {"name": info["name"], "version": info["version"], "fingerprint": fingerprint,
                    "targets": targets, **({"description": info["description"]} if info["description"] else {})},
        "language": "python",
        "python": {"requires_python": info["requires_python"], "entry_module": info["entry_module"]},
        "tasks": tasks,
        "created_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }
    try:
        return parse_manifest(json.dumps(raw).encode())
    except ManifestError as exc:
        raise ProjectError(f"pyproject.toml gives values the manifest cannot hold: {exc}") from None


def write_archive(stage: Path, output: Path, files_only: bool = False) -> None:
    """A bzip2 tar of `stage`, entries sorted and owner/time normalised so builds repeat.

    `files_only` leaves directory entries out, as the engine's packer does.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as archive:
        for path in sorted(stage.rglob("*")):
            if files_only and path.is_dir() and not path.is_symlink():
                continue
            relative = path.relative_to(stage).as_posix()
            info = archive.gettarinfo(str(path), arcname=relative)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if (info.isdir() or info.mode & 0o100) else 0o644
            if info.isreg():
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    temporary.write_bytes(buffer.getvalue())
    temporary.replace(output)


def build_package(project_dir: Path, output: Path | None = None, import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
                  ) -> tuple[Path, Manifest | PackageToml, Discovery]:
    """Build and check the archive; returns its path, its manifest and what discovery found."""
    project_dir = project_dir.resolve()
    if (project_dir / PACKAGE_TOML).is_file():
        return build_package_toml(project_dir, output, import_timeout)
    return build_manifest_json(project_dir, output, import_timeout)


def build_package_toml(project_dir: Path, output: Path | None = None,
                       import_timeout: float = DEFAULT_IMPORT_TIMEOUT) -> tuple[Path, PackageToml, Discovery]:
    """The engine's format: resolved package.toml and the project's files under <name>-<version>/."""
    manifest = parse_package_toml((project_dir / PACKAGE_TOML).read_bytes(), project_dir)
    if not (project_dir / SOURCE_DIR).is_dir():
        raise MissingSourceDirError(f"{project_dir} has no {SOURCE_DIR}/ directory: a package.toml project keeps "
                                    f"its modules there (e.g. {SOURCE_DIR}/my_package/tasks.py)")
    top = f"{manifest.package.name}-{manifest.package.version}"
    output = (output or project_dir / "dist" / f"{top}.cloacina").resolve()
    with tempfile.TemporaryDirectory(prefix="cloaca-build-") as scratch:
        tree = Path(scratch) / "package"
        stage = tree / top
        shutil.copytree(project_dir, stage, ignore=_ignore_beside(output), symlinks=False)
        (stage / PACKAGE_TOML).write_text(manifest.to_toml(), encoding="utf-8")
        staged = check_package(tree)
        discovery = discover_package(staged, import_timeout)
        check_discovery(staged, discovery)
        write_archive(tree, output, files_only=True)
    return output, manifest, discovery


def _ignore_beside(output: Path) -> Any:
    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = _ignore(directory, names)
        return skipped | {name for name in names if Path(directory, name).resolve() == output}

    return ignore


def build_manifest_json(project_dir: Path, output: Path | None = None,
                        import_timeout: float = DEFAULT_IMPORT_TIMEOUT) -> tuple[Path, Manifest, Discovery]:
    """The seeds' format: manifest.json (format "2") with the discovered tasks and a real fingerprint."""
    info = read_project(project_dir)
    with tempfile.TemporaryDirectory(prefix="cloaca-build-") as scratch:
        stage = Path(scratch) / "package"
        stage.mkdir()
        stage_project(project_dir, info, stage)
        # A first manifest with no tasks lets the loader's checks run on the
        # staged tree before anything is imported.
        _write_manifest(stage, _manifest_for(info, FINGERPRINT_PLACEHOLDER, _targets(stage), []))
        staged = check_package(stage)
        discovery = discover_package(staged, import_timeout)
        if discovery.problems:
            check_discovery(staged, discovery)
        tasks = [{"id": t.id, "function": t.function, "dependencies": t.dependencies} for t in discovery.tasks]
        manifest = _manifest_for(info, tree_fingerprint(stage), _targets(stage), tasks)
        _write_manifest(stage, manifest)
        check_package(stage)
        output = output or project_dir / "dist" / f"{info['name']}-{info['version']}.cloacina"
        write_archive(stage, output.resolve())
    return output, manifest, discovery
