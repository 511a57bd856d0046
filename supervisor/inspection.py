"""`cloaca-sandbox inspect`: every loader check on an archive (either format), and what it declares."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.archive import ExtractionLimits
from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery
from supervisor.manifest import Manifest
from supervisor.package import (
    FORMAT_MANIFEST_JSON,
    FORMAT_PACKAGE_TOML,
    ExtractedPackage,
    check_discovery,
    extract_package,
)
from supervisor.package_toml import PackageToml
from supervisor.core import discover_package


@dataclass
class PackageSummary:
    """What `package` and `inspect` show of a checked package, whatever its format."""

    format: str
    name: str
    version: str
    description: str | None
    entry_module: str
    workflow_name: str
    requires_python: str | None
    fingerprint: str
    manifest: Manifest | PackageToml

    @classmethod
    def of(cls, package: ExtractedPackage) -> "PackageSummary":
        manifest = package.manifest if package.manifest is not None else package.package_toml
        assert manifest is not None
        return cls(package.format, package.name, package.version, package.description, package.entry_module,
                   package.workflow_name, package.requires_python, package.fingerprint, manifest)

    @classmethod
    def of_manifest(cls, manifest: Manifest | PackageToml) -> "PackageSummary":
        """From a built package's manifest (a package.toml's fingerprint is known only once extracted)."""
        if isinstance(manifest, Manifest):
            assert manifest.python is not None
            return cls(FORMAT_MANIFEST_JSON, manifest.package.name, manifest.package.version,
                       manifest.package.description, manifest.python.entry_module, manifest.python.entry_module,
                       manifest.python.requires_python, manifest.package.fingerprint, manifest)
        return cls(FORMAT_PACKAGE_TOML, manifest.package.name, manifest.package.version, manifest.metadata.description,
                   manifest.entry_module, manifest.workflow_name, manifest.metadata.requires_python, "", manifest)

    def manifest_dict(self) -> dict[str, Any]:
        return self.manifest.model_dump(mode="json", exclude_none=True)


@dataclass
class InspectionReport:
    summary: PackageSummary
    discovery: Discovery
    warnings: list[str]

    @property
    def manifest(self) -> Manifest | PackageToml:
        return self.summary.manifest

    @property
    def fingerprint(self) -> str:
        return self.summary.fingerprint


def inspect_archive(archive: str | os.PathLike[str] | bytes, import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
                    limits: ExtractionLimits = ExtractionLimits()) -> InspectionReport:
    """Run all checks, including importing the entry module; raises the first PackageError."""
    with tempfile.TemporaryDirectory(prefix="cloaca-inspect-") as scratch:
        package = extract_package(archive, Path(scratch), limits)
        discovery = discover_package(package, import_timeout)
        check_discovery(package, discovery)
        return InspectionReport(PackageSummary.of(package), discovery, package.warnings)
