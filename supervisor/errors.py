"""Why a package was refused: one class per check, each with a stable code."""

from __future__ import annotations


class PackageError(ValueError):
    """A package the loader refuses. `code` names the check that failed."""

    code = "invalid_package"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code


class MissingManifestError(PackageError):
    code = "missing_manifest"


class InvalidManifestError(PackageError):
    code = "invalid_manifest"


class WrongLanguageError(PackageError):
    code = "wrong_language"


class UnsupportedPythonError(PackageError):
    code = "unsupported_python"


class FingerprintMismatchError(PackageError):
    code = "fingerprint_mismatch"


class MissingEntryModuleError(PackageError):
    code = "missing_entry_module"


class ShadowingError(PackageError):
    code = "stdlib_shadowing"


class TaskGraphError(PackageError):
    code = "invalid_task_graph"


class DiscoveryError(PackageError):
    """Importing the entry module failed, timed out, or disagreed with the manifest."""

    code = "discovery_failed"

    def __init__(self, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.traceback = traceback


class ImportTimeoutError(DiscoveryError):
    code = "import_timeout"


class IntegrityError(PackageError):
    """A package's files on disk are not what was accepted (an archive's sha256, an extracted tree's
    fingerprint): nothing of it runs."""

    code = "integrity_failed"


class MissingSourceDirError(PackageError):
    """A package.toml package without its `workflow/` source directory."""

    code = "missing_source_dir"


class UnsupportedFeatureError(PackageError):
    """The package declares something this host does not run yet (computation graphs, constructors)."""

    code = "unsupported_feature"


class EmptyPackageError(PackageError):
    """Importing the entry module declared no tasks."""

    code = "empty_package"


class DuplicateTaskError(PackageError):
    """One task id in two workflows, or two workflows of one name: calls could not tell them apart."""

    code = "duplicate_task"


class InvalidTriggerError(PackageError):
    """A @cloaca.trigger that cannot be scheduled: an unknown workflow, a bad cron expression or timezone."""

    code = "invalid_trigger"


# The codes a sandbox's discovery may report problems with, and the error each raises.
ERRORS_BY_CODE: dict[str, type[PackageError]] = {
    cls.code: cls for cls in (UnsupportedFeatureError, EmptyPackageError, DuplicateTaskError, TaskGraphError,
                              DiscoveryError)
}
