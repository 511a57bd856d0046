"""`manifest.json` format_version "2" (the seeds' format), as pydantic models.

A manifest that does not fit gets a `ManifestError` naming each bad field.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FINGERPRINT_PLACEHOLDER = "sha256:placeholder"
DOTTED_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$"
_FUNCTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.<>]*$")
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_MANIFEST_BYTES = 1024 * 1024


class ManifestError(ValueError):
    """The manifest cannot be read or does not fit the schema."""


class _Model(BaseModel):
    # Unknown keys are ignored: newer packagers may add fields we do not use.
    model_config = ConfigDict(extra="ignore", frozen=True)


class PackageInfo(_Model):
    name: str = Field(min_length=1, max_length=128, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=64, pattern=VERSION_PATTERN)
    fingerprint: str
    targets: list[str] = Field(default_factory=list)
    description: str | None = None

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_form(cls, value: str) -> str:
        if value != FINGERPRINT_PLACEHOLDER and not _FINGERPRINT.match(value):
            raise ValueError("must be 'sha256:' followed by 64 lowercase hex digits")
        return value


class PythonRuntime(_Model):
    requires_python: str
    entry_module: str

    @field_validator("requires_python")
    @classmethod
    def _specifier(cls, value: str) -> str:
        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise ValueError(f"{value!r} is not a version specifier such as '>=3.10'") from None
        return value

    @field_validator("entry_module")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not DOTTED_MODULE.match(value):
            raise ValueError(f"{value!r} is not a dotted Python module path")
        return value


class TaskDefinition(_Model):
    id: str = Field(min_length=1, max_length=256)
    function: str
    dependencies: list[str] = Field(default_factory=list)

    @field_validator("function")
    @classmethod
    def _function_ref(cls, value: str) -> str:
        if not _FUNCTION.match(value):
            raise ValueError(f"{value!r} is not of the form 'module:function'")
        return value


class Manifest(_Model):
    format_version: Literal["2"]
    package: PackageInfo
    language: str
    python: PythonRuntime | None = None
    rust: dict[str, Any] | None = None
    tasks: list[TaskDefinition]
    created_at: datetime
    signature: str | None = None

    @model_validator(mode="after")
    def _unique_task_ids(self) -> "Manifest":
        seen: set[str] = set()
        for task in self.tasks:
            if task.id in seen:
                raise ValueError(f"tasks: task id {task.id!r} appears more than once")
            seen.add(task.id)
        return self

    def dependency_graph(self) -> dict[str, list[str]]:
        return {task.id: list(task.dependencies) for task in self.tasks}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n"


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "manifest"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest bytes, or raise ManifestError."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest.json is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest.json is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError("manifest.json must hold a JSON object")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"invalid manifest: {_describe(exc)}") from None
