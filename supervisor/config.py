"""Supervisor configuration, and the limits that may be set per package."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class PackageLimits(BaseModel):
    """Limits for one package; None means the supervisor's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    import_timeout: float | None = Field(default=None, gt=0)
    call_timeout: float | None = Field(default=None, gt=0)
    memory_limit_mib: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int | None = Field(default=None, ge=0)


class EffectiveLimits(BaseModel):
    """The limits a sandbox runs under: the package's, else the supervisor's."""

    model_config = ConfigDict(frozen=True)

    import_timeout: float
    call_timeout: float
    memory_limit_mib: int | None
    max_concurrency: int
    max_queue: int

    @property
    def memory_limit_bytes(self) -> int | None:
        return None if self.memory_limit_mib is None else self.memory_limit_mib * MIB


class SupervisorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    work_dir: Path | None = Field(default=None, description="staging area; a private temp dir when None")
    import_timeout: float = Field(default=60.0, gt=0, description="seconds to import a package's entry module")
    call_timeout: float = Field(default=300.0, gt=0, description="seconds a task call may run")
    memory_limit_mib: int | None = Field(default=1024, gt=0, description="per sandbox, its whole process tree")
    max_concurrency: int = Field(default=4, ge=1, description="calls one sandbox runs at once")
    max_queue: int = Field(default=64, ge=0, description="callers that may wait for a busy sandbox")
    output_limit_bytes: int = Field(default=64 * 1024, ge=1024, description="stdout/stderr kept per call (tail)")
    memory_sample_interval: float = Field(default=0.1, gt=0)
    restart_backoff_initial: float = Field(default=0.2, ge=0)
    restart_backoff_max: float = Field(default=10.0, ge=0)
    max_start_failures: int = Field(default=5, ge=1, description="failed restarts in a row before giving up")
    stable_after: float = Field(default=30.0, ge=0, description="uptime that resets the restart backoff")
    stop_grace: float = Field(default=5.0, ge=0, description="seconds in-flight calls get on unload or shutdown")

    def limits_for(self, package: PackageLimits | None) -> EffectiveLimits:
        package = package or PackageLimits()

        def pick(name: str) -> object:
            value = getattr(package, name)
            return getattr(self, name) if value is None else value

        return EffectiveLimits(**{name: pick(name) for name in EffectiveLimits.model_fields})
