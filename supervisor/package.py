"""Loading a package archive: extract it safely and run every static check.

`extract_package` returns an `ExtractedPackage` ready for a sandbox, or
raises the `PackageError` of the first check that failed, leaving nothing
on disk. Importing the entry module (discovery) is a separate step that
runs in another interpreter.
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
from supervisor.errors import (
    FingerprintMismatchError,
    InvalidManifestError,
    MissingEntryModuleError,
    MissingManifestError,
    PackageError,
    ShadowingError,
    TaskGraphError,
    UnsupportedPythonError,
    WrongLanguageError,
)
from supervisor.fingerprint import MANIFEST_NAME, tree_fingerprint
from supervisor.manifest import FINGERPRINT_PLACEHOLDER, Manifest, ManifestError, parse_manifest

log = logging.getLogger(__name__)

# The packaging guide's list; sys.stdlib_module_names adds the rest of the stdlib.
BLOCKED_MODULES = frozenset({
    "os", "sys", "subprocess", "shutil", "socket", "http", "urllib", "ctypes", "importlib",
    "pathlib", "io", "json", "pickle", "marshal", "code", "codeop", "compile", "compileall",
    "builtins", "signal", "multiprocessing", "threading", "tempfile", "glob", "fnmatch",
})
# Imported by the sandbox runtime before package code: a package's own copy would be ignored.
RESERVED_MODULES = frozenset({"cloaca", "sandbox_runtime"})
_MODULE_SUFFIXES = sorted(importlib.machinery.all_suffixes(), key=len, reverse=True)


@dataclass
class ExtractedPackage:
    """A package on disk that passed every static check."""

    root: Path
    source_dir: Path
    vendor_dir: Path | None
    manifest: Manifest
    fingerprint: str  # computed from the content, whatever the manifest says
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.package.name

    @property
    def version(self) -> str:
        return self.manifest.package.version

    @property
    def entry_module(self) -> str:
        assert self.manifest.python is not None  # checked at load
        return self.manifest.python.entry_module

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
    manifest = read_manifest(root)
    check_language(manifest)
    warnings: list[str] = []
    fingerprint = check_fingerprint(root, manifest, warnings)
    source_dir = root / "src" if (root / "src").is_dir() else root
    vendor_dir = root / "vendor" if (root / "vendor").is_dir() else None
    assert manifest.python is not None
    check_entry_module(source_dir, root, manifest.python.entry_module)
    check_shadowing(source_dir, vendor_dir, root)
    check_task_graph(manifest)
    for warning in warnings:
        log.warning("package %s %s: %s", manifest.package.name, manifest.package.version, warning)
    return ExtractedPackage(root, source_dir, vendor_dir, manifest, fingerprint, warnings)


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_NAME
    if not path.is_file() or path.is_symlink():
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


def check_task_graph(manifest: Manifest) -> None:
    try:
        check_graph(manifest.dependency_graph())
    except GraphError as exc:
        raise TaskGraphError(f"invalid task graph: {exc}") from None


__all__ = ["ExtractedPackage", "PackageError", "check_package", "extract_package"]
