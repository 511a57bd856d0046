"""`package.toml`: the engine's current manifest (a fidius source package), as pydantic models.

Read as the engine's resolver reads it (cloacina-workflow-plugin's
`resolve_manifest_str`), explicit values always winning:
- `[package]` `interface` defaults to "cloacina-workflow-plugin",
  `interface_version` to 1, `extension` to "cloacina"; other `[package]` keys
  are ignored;
- `[metadata]` `language` is inferred from the layout: a `workflow/` dir means
  "python", `Cargo.toml` + `src/lib.rs` means "rust", both or neither is an
  error; a Python package's `entry_module` defaults to `<name, '-' -> '_'>.tasks`;
- `[metadata]` denies unknown keys (the engine's serde `deny_unknown_fields`),
  so `package_type` or `[[metadata.triggers]]` are refused with the list of
  keys it takes.

What this host does not run is refused here, before anything is imported:
a Rust package (wrong_language), a computation-graph package (`graph_name`
and its keys) and constructor providers (`providers`) (unsupported_feature).
Unlike the engine, `requires_python` is enforced.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import tomli_w
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import tomllib

from supervisor.errors import InvalidManifestError, UnsupportedFeatureError, UnsupportedPythonError, WrongLanguageError
from supervisor.manifest import DOTTED_MODULE, NAME_PATTERN, VERSION_PATTERN

PACKAGE_TOML = "package.toml"
SOURCE_DIR = "workflow"
DEFAULT_INTERFACE = "cloacina-workflow-plugin"
DEFAULT_INTERFACE_VERSION = 1
DEFAULT_EXTENSION = "cloacina"
UNKNOWN_WORKFLOW = "unknown"  # what the engine's Python loader uses when workflow_name is absent
METADATA_KEYS = ("language", "workflow_name", "graph_name", "entry_module", "description", "author",
                 "requires_python", "reaction_mode", "input_strategy", "accumulators", "providers")
GRAPH_KEYS = ("graph_name", "reaction_mode", "input_strategy", "accumulators")
MAX_MANIFEST_BYTES = 1024 * 1024


class PackageHeader(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)
    interface: str = DEFAULT_INTERFACE
    interface_version: int = DEFAULT_INTERFACE_VERSION
    extension: str = DEFAULT_EXTENSION
    runtime: str | None = None


class CloacinaMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str
    workflow_name: str | None = Field(default=None, min_length=1)
    graph_name: str | None = None
    entry_module: str | None = None
    description: str | None = None
    author: str | None = None
    requires_python: str | None = None
    reaction_mode: str | None = None
    input_strategy: str | None = None
    accumulators: list[dict[str, Any]] | None = None
    providers: dict[str, Any] | None = None

    @field_validator("entry_module")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and not DOTTED_MODULE.match(value):
            raise ValueError(f"{value!r} is not a dotted Python module path")
        return value

    @field_validator("requires_python")
    @classmethod
    def _specifier(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier:
                raise ValueError(f"{value!r} is not a version specifier such as '>=3.10'") from None
        return value


class PackageToml(BaseModel):
    """A resolved package.toml: every default applied, as `cloacinactl package pack` writes it."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    package: PackageHeader
    metadata: CloacinaMetadata

    @property
    def entry_module(self) -> str:
        assert self.metadata.entry_module is not None  # resolved for Python packages
        return self.metadata.entry_module

    @property
    def workflow_name(self) -> str:
        return self.metadata.workflow_name or UNKNOWN_WORKFLOW

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


def _problem(message: str) -> InvalidManifestError:
    return InvalidManifestError(f"invalid package.toml: {message}")


def infer_language(package_dir: Path) -> str:
    looks_rust = (package_dir / "Cargo.toml").is_file() and (package_dir / "src" / "lib.rs").is_file()
    looks_python = (package_dir / SOURCE_DIR).is_dir()
    if looks_rust and looks_python:
        raise _problem("cannot infer [metadata].language: the layout has BOTH a Rust crate (Cargo.toml + "
                       "src/lib.rs) and a Python workflow/ dir — declare language explicitly")
    if not (looks_rust or looks_python):
        raise _problem("cannot infer [metadata].language: no Cargo.toml + src/lib.rs (Rust) and no workflow/ dir "
                       "(Python) — declare language explicitly or fix the layout")
    return "rust" if looks_rust else "python"


def resolve(document: dict[str, Any], package_dir: Path) -> dict[str, Any]:
    """Apply the engine's defaults and inference to a parsed package.toml (explicit values win)."""
    package = document.get("package")
    metadata = document.setdefault("metadata", {})
    if not isinstance(package, dict):
        raise _problem("[package] with name and version is required")
    if not isinstance(metadata, dict):
        raise _problem("[metadata] must be a table")
    package.setdefault("interface", DEFAULT_INTERFACE)
    package.setdefault("interface_version", DEFAULT_INTERFACE_VERSION)
    package.setdefault("extension", DEFAULT_EXTENSION)
    unknown = [key for key in metadata if key not in METADATA_KEYS]
    if unknown:
        expected = ", ".join(f"`{key}`" for key in METADATA_KEYS)
        raise _problem(f"unknown field `{unknown[0]}` in [metadata], expected one of {expected}. "
                       "[metadata] takes only these keys (Cloacina's CloacinaMetadata denies unknown fields): "
                       "triggers and the like are declared in code with @cloaca.trigger")
    if "language" not in metadata:
        metadata["language"] = infer_language(package_dir)
    if str(metadata["language"]).lower() == "python" and "entry_module" not in metadata \
            and isinstance(package.get("name"), str):
        metadata["entry_module"] = package["name"].replace("-", "_") + ".tasks"
    return document


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "package.toml"
        parts.append(f"{where}: {item['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_package_toml(data: bytes, package_dir: Path) -> PackageToml:
    """Parse, resolve and check a package.toml; raises the loader's error for the first problem."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _problem(f"it is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _problem(f"not valid TOML: {exc}") from None
    resolved = resolve(document, package_dir)
    try:
        manifest = PackageToml.model_validate(resolved)
    except ValidationError as exc:
        raise _problem(_describe(exc)) from None
    check_supported(manifest)
    return manifest


def check_supported(manifest: PackageToml) -> None:
    """Refuse what this host does not run, naming it."""
    header, metadata = manifest.package, manifest.metadata
    if header.interface != DEFAULT_INTERFACE or header.interface_version != DEFAULT_INTERFACE_VERSION:
        raise _problem(f"[package] interface is {header.interface!r} version {header.interface_version}: this is "
                       f"not a Cloacina workflow package ({DEFAULT_INTERFACE!r} version {DEFAULT_INTERFACE_VERSION})")
    if metadata.language.lower() != "python":
        raise WrongLanguageError(
            f"Wrong package language: expected python, got {metadata.language}"
            + (" (Rust packages are loaded by the cloacina engine, not this service)"
               if metadata.language.lower() == "rust" else ""))
    graph_keys = [key for key in GRAPH_KEYS if getattr(metadata, key) is not None]
    if graph_keys:
        name = f" {metadata.graph_name!r}" if metadata.graph_name else ""
        raise UnsupportedFeatureError(
            f"the package is a computation graph{name} ([metadata] {', '.join(graph_keys)}); this host does not "
            "run computation graphs yet")
    if metadata.providers is not None:
        raise UnsupportedFeatureError(
            f"the package declares constructor providers ([metadata] providers: {', '.join(metadata.providers)}); "
            "this host does not run constructors yet")
    if metadata.requires_python is not None:
        running = platform.python_version()
        if not SpecifierSet(metadata.requires_python).contains(running, prereleases=True):
            raise UnsupportedPythonError(f"package requires Python {metadata.requires_python}, "
                                         f"but this service runs Python {running}")
