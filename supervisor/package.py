"""Loading a package archive: extract it safely and run every static check, whatever its format.

`extract_package` returns an `ExtractedPackage` ready for a sandbox, or
raises the `PackageError` of the first check that failed, leaving nothing
on disk. The format is recognised from the content:

- `manifest.json` at the archive's root: the seeds' format_version "2"
  (source at the root, under `src/`, or under `workflow/`);
- `package.toml` in a single top-level directory (`<name>-<version>/`): the
  engine's current format, source under `workflow/`.

Both get the same checks: safe extraction and caps (supervisor.archive),
the entry module present, no module shadowing the standard library, and,
once a sandbox has imported the entry module, `check_discovery`.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import platform
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import SpecifierSet

from cloaca.graph import GraphError, check_graph
from supervisor.archive import ExtractionLimits, extract_archive, open_source
from supervisor.discovery import Discovery, compare_with_manifest
from supervisor.errors import (
    ERRORS_BY_CODE,
    DiscoveryError,
    FingerprintMismatchError,
    InvalidManifestError,
    MissingEntryModuleError,
    MissingManifestError,
    MissingSourceDirError,
    PackageError,
    ShadowingError,
    TaskGraphError,
    UnsupportedPythonError,
    WrongLanguageError,
)
from supervisor.fingerprint import MANIFEST_NAME, tree_fingerprint
from supervisor.manifest import FINGERPRINT_PLACEHOLDER, Manifest, ManifestError, parse_manifest
from supervisor.package_toml import PACKAGE_TOML, SOURCE_DIR, UNKNOWN_WORKFLOW, PackageToml, parse_package_toml

log = logging.getLogger(__name__)

FORMAT_MANIFEST_JSON = "manifest.json"
FORMAT_PACKAGE_TOML = "package.toml"

# The engine's loader's list (loader.rs STDLIB_DENY_LIST); sys.stdlib_module_names adds the rest of the stdlib.
BLOCKED_MODULES = frozenset({
    "os", "sys", "subprocess", "shutil", "socket", "http", "urllib", "ctypes", "importlib",
    "pathlib", "io", "json", "pickle", "marshal", "code", "codeop", "compile", "compileall",
    "builtins", "signal", "multiprocessing", "threading", "tempfile", "glob", "fnmatch",
})
# Imported by the sandbox runtime before package code: a package's own copy would be ignored.
RESERVED_MODULES = frozenset({"cloaca", "sandbox_runtime"})
_MODULE_SUFFIXES = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)

# How the sandbox learns which package it holds (sandbox_runtime.declarations.PackageIdentity).


@dataclass
class ExtractedPackage:
    """A package on disk that passed every static check.

    `manifest` is set for the manifest.json format, `package_toml` for the
    package.toml one; everything else reads the same for both.
    """

    root: Path
    source_dir: Path
    vendor_dir: Path | None
    format: str
    name: str
    version: str
    entry_module: str
    workflow_name: str  # what module-level tasks register under
    fingerprint: str  # computed from the content, whatever a manifest says
    manifest: Manifest | None = None
    package_toml: PackageToml | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def description(self) -> str | None:
        if self.manifest is not None:
            return self.manifest.package.description
        assert self.package_toml is not None
        return self.package_toml.metadata.description

    @property
    def requires_python(self) -> str | None:
        if self.manifest is not None:
            assert self.manifest.python is not None
            return self.manifest.python.requires_python
        assert self.package_toml is not None
        return self.package_toml.metadata.requires_python

    @property
    def import_paths(self) -> list[str]:
        """What goes first on the sandbox's sys.path: source, then vendor."""
        paths = [str(self.source_dir)]
        if self.vendor_dir is not None:
            paths.append(str(self.vendor_dir))
        return paths

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def extract_package(
    archive: bytes | str | os.PathLike[str],
    staging_dir: Path,
    limits: ExtractionLimits = ExtractionLimits(),
) -> ExtractedPackage:
    """Extract `archive` under `staging_dir` and check it; see the module doc."""
    staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = staging_dir / uuid.uuid4().hex
    with open_source(archive) as source:
        extract_archive(source, root, limits)
    try:
        return check_package(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def check_package(root: Path) -> ExtractedPackage:
    """Run the static checks on an extracted tree, in the order a person would fix them."""
    if _is_file(root / MANIFEST_NAME):
        package = _check_manifest_json(root)
    else:
        package = _check_package_toml(root, find_package_dir(root))
    check_entry_module(package.source_dir, root, package.entry_module)
    check_shadowing(package.source_dir, package.vendor_dir, root)
    for warning in package.warnings:
        log.warning("package %s %s: %s", package.name, package.version, warning)
    return package


def _is_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def find_package_dir(root: Path) -> Path:
    """The single top-level directory holding package.toml; MissingManifestError when there is none."""
    candidates = sorted(entry for entry in root.iterdir()
                        if entry.is_dir() and not entry.is_symlink() and _is_file(entry / PACKAGE_TOML))
    if len(candidates) > 1:
        names = ", ".join(f"{c.name}/" for c in candidates)
        raise InvalidManifestError(f"the archive holds {len(candidates)} package directories ({names}); "
                                   "a package has exactly one")
    if candidates:
        return candidates[0]
    if _is_file(root / PACKAGE_TOML):
        raise MissingManifestError(
            "package.toml is at the archive's root: it must be inside a single top-level directory "
            "<name>-<version>/, as `cloacinactl package pack` (and `cloaca-sandbox package`) build it")
    raise MissingManifestError(
        "Missing package manifest: expected manifest.json at the archive's root (format 2) or "
        "<name>-<version>/package.toml (the package.toml format)")


# --- manifest.json -------------------------------------------------------------------

def _check_manifest_json(root: Path) -> ExtractedPackage:
    manifest = read_manifest(root)
    check_language(manifest)
    warnings: list[str] = []
    fingerprint = check_fingerprint(root, manifest, warnings)
    assert manifest.python is not None
    check_task_graph(manifest)
    source_dir = next((root / name for name in (SOURCE_DIR, "src") if (root / name).is_dir()), root)
    vendor_dir = root / "vendor" if (root / "vendor").is_dir() else None
    # The seeds' loader named the workflow of module-level tasks after the entry module.
    return ExtractedPackage(root, source_dir, vendor_dir, FORMAT_MANIFEST_JSON, manifest.package.name,
                            manifest.package.version, manifest.python.entry_module, manifest.python.entry_module,
                            fingerprint, manifest=manifest, warnings=warnings)


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not _is_file(path):
        raise MissingManifestError("Missing manifest.json in package: it must be a file at the archive's root")
    try:
        return parse_manifest(path.read_bytes())
    except ManifestError as exc:
        raise InvalidManifestError(str(exc)) from None


def check_language(manifest: Manifest) -> None:
    if manifest.language != "python":
        raise WrongLanguageError(
            f"Wrong package language: expected python, got {manifest.language}"
            + (" (Rust packages are loaded by the cloacina engine, not this service)"
               if manifest.language == "rust" else "")
        )
    if manifest.python is None:
        raise InvalidManifestError("invalid manifest: python: required when language is 'python'")
    running = platform.python_version()
    if not SpecifierSet(manifest.python.requires_python).contains(running, prereleases=True):
        raise UnsupportedPythonError(
            f"package requires Python {manifest.python.requires_python}, "
            f"but this service runs Python {running}"
        )


def check_fingerprint(root: Path, manifest: Manifest, warnings: list[str]) -> str:
    actual = tree_fingerprint(root)
    declared = manifest.package.fingerprint
    if declared == FINGERPRINT_PLACEHOLDER:
        warnings.append(f"fingerprint is {FINGERPRINT_PLACEHOLDER!r}: the content was not verified "
                        f"(its fingerprint is {actual})")
    elif declared != actual:
        raise FingerprintMismatchError(
            f"fingerprint mismatch: the manifest says {declared} but the content hashes to {actual}; "
            "the package was changed after it was built"
        )
    return actual


def check_task_graph(manifest: Manifest) -> None:
    try:
        check_graph(manifest.dependency_graph())
    except GraphError as exc:
        raise TaskGraphError(f"invalid task graph: {exc}") from None


# --- package.toml --------------------------------------------------------------------

def _check_package_toml(root: Path, package_dir: Path) -> ExtractedPackage:
    manifest = parse_package_toml((package_dir / PACKAGE_TOML).read_bytes(), package_dir)
    header = manifest.package
    warnings: list[str] = []
    expected_dir = f"{header.name}-{header.version}"
    if package_dir.name != expected_dir:
        warnings.append(f"the package directory is {package_dir.name}/, not {expected_dir}/ as the packer names it")
    strays = sorted(entry.name for entry in root.iterdir() if entry != package_dir)
    if strays:
        warnings.append(f"ignored entries beside the package directory: {', '.join(strays)}")
    if manifest.metadata.workflow_name is None:
        warnings.append(f"[metadata] workflow_name is not set: module-level tasks form the workflow "
                        f"{UNKNOWN_WORKFLOW!r}, as in the engine")
    source_dir = package_dir / SOURCE_DIR
    if not source_dir.is_dir() or source_dir.is_symlink():
        raise MissingSourceDirError(
            "Missing workflow source directory in Python package: a package.toml package keeps its modules "
            f"under {package_dir.name}/{SOURCE_DIR}/")
    vendor_dir = package_dir / "vendor" if (package_dir / "vendor").is_dir() else None
    return ExtractedPackage(root, source_dir, vendor_dir, FORMAT_PACKAGE_TOML, header.name, header.version,
                            manifest.entry_module, manifest.workflow_name, tree_fingerprint(root),
                            package_toml=manifest, warnings=warnings)


# --- checks on the tree, for both formats ----------------------------------------------------

def check_entry_module(source_dir: Path, root: Path, entry_module: str) -> None:
    base = source_dir.joinpath(*entry_module.split("."))
    candidates = [base.with_name(base.name + ".py"), base / "__init__.py"]
    if any(path.is_file() for path in candidates):
        return
    where = source_dir.relative_to(root).as_posix()
    where = "the archive root" if where == "." else f"{where}/"
    relative = "/".join(entry_module.split("."))
    raise MissingEntryModuleError(
        f"entry module {entry_module!r} not found: expected {relative}.py or {relative}/__init__.py under {where}"
    )


def top_level_modules(directory: Path) -> set[str]:
    """The importable names a directory on sys.path provides."""
    names = set()
    for entry in directory.iterdir():
        name = entry.name
        if entry.is_dir():
            if name.isidentifier():
                names.add(name)
            continue
        for suffix in _MODULE_SUFFIXES:
            if name.endswith(suffix):
                stem = name[: -len(suffix)]
                if stem.isidentifier():
                    names.add(stem)
                break
    return names


def check_shadowing(source_dir: Path, vendor_dir: Path | None, root: Path) -> None:
    stdlib = BLOCKED_MODULES | frozenset(sys.stdlib_module_names)
    problems = []
    for directory in (source_dir, vendor_dir):
        if directory is None:
            continue
        names = top_level_modules(directory)
        if directory == root:
            names.discard("vendor")  # the layout's own directory, not a module
        label = directory.relative_to(root).as_posix()
        label = "archive root" if label == "." else f"{label}/"
        for name in sorted(names & stdlib):
            problems.append(f"{name!r} in {label} shadows the standard library module of that name")
        for name in sorted(names & RESERVED_MODULES):
            problems.append(f"{name!r} in {label} is reserved by the sandbox runtime")
    if problems:
        raise ShadowingError("package refused: " + "; ".join(problems) + ". Remove or rename these modules.")


# --- after the import ---------------------------------------------------------------------------

def check_discovery(package: ExtractedPackage, discovery: Discovery) -> None:
    """Refuse a package whose import declared something unloadable, or (format 2) not what its manifest says.

    Each problem the sandbox reported raises its own error class (by code):
    unsupported_feature, invalid_task_graph, duplicate_task, empty_package; a trigger
    that cannot be scheduled raises InvalidTriggerError.
    """
    from supervisor.scheduling import schedule_definitions  # the scheduler's modules, only once a package loads

    if discovery.problems:
        first = discovery.problems[0]
        same = [p.message for p in discovery.problems if p.code == first.code]
        error = ERRORS_BY_CODE.get(first.code, DiscoveryError)
        raise error("package refused: " + "; ".join(same))
    if package.manifest is not None:
        compare_with_manifest(package.manifest, discovery)
    schedule_definitions(discovery)


__all__ = ["ExtractedPackage", "PackageError", "check_discovery", "check_package", "extract_package"]
