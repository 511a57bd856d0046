"""`cloaca-sandbox inspect`: every loader check on an archive, and what it declares."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from supervisor.archive import ExtractionLimits
from supervisor.discovery import DEFAULT_IMPORT_TIMEOUT, Discovery, compare_with_manifest
from supervisor.manifest import Manifest
from supervisor.package import extract_package
from supervisor.core import discover_package


@dataclass
class InspectionReport:
    manifest: Manifest
    discovery: Discovery
    fingerprint: str
    warnings: list[str]


def inspect_archive(archive: str | os.PathLike[str] | bytes, import_timeout: float = DEFAULT_IMPORT_TIMEOUT,
                    limits: ExtractionLimits = ExtractionLimits()) -> InspectionReport:
    """Run all checks, including importing the entry module; raises the first PackageError."""
    with tempfile.TemporaryDirectory(prefix="cloaca-inspect-") as scratch:
        package = extract_package(archive, Path(scratch), limits)
        discovery = discover_package(package, import_timeout)
        compare_with_manifest(package.manifest, discovery)
        return InspectionReport(package.manifest, discovery, package.fingerprint, package.warnings)
