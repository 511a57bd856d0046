"""Supervisor configuration, and the limits that may be set per package."""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class IsolationLevel(str, enum.Enum):
    DEFAULT = "default"  # the strongest this machine allows; what is missing is logged
    STRICT = "strict"  # every confinement layer, or no sandbox starts


class LauncherKind(str, enum.Enum):
    ZYGOTE = "zygote"  # fork each sandbox from one warm interpreter (milliseconds)
    SPAWN = "spawn"  # start a fresh interpreter per sandbox (for machines where a zygote cannot run)


class PackageLimits(BaseModel):
    """Limits for one package; None means the supervisor's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    import_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    call_timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    memory_limit_mib: int | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    max_queue: int | None = Field(default=None, ge=0)
    scratch_mib: int | None = Field(default=None, ge=1, description="its writable home and temp dir")
    max_processes: int | None = Field(default=None, ge=16, description="processes and threads")
    network: bool | None = Field(default=None, description="outbound network (the host's network namespace)")


class EffectiveLimits(BaseModel):
    """The limits a sandbox runs under: the package's, else the supervisor's."""

    model_config = ConfigDict(frozen=True)

    import_timeout: float
    call_timeout: float
    memory_limit_mib: int | None
    max_concurrency: int
    max_queue: int
    scratch_mib: int
    max_processes: int
    network: bool

    @property
    def memory_limit_bytes(self) -> int | None:
        return None if self.memory_limit_mib is None else self.memory_limit_mib * MIB


class SupervisorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    work_dir: Path | None = Field(default=None, description="staging area; a private temp dir when None")
    import_timeout: float = Field(default=60.0, gt=0, allow_inf_nan=False,
                                  description="seconds to import a package's entry module")
    call_timeout: float = Field(default=300.0, gt=0, allow_inf_nan=False, description="seconds a task call may run")
    memory_limit_mib: int | None = Field(default=1024, gt=0, description="per sandbox, its whole process tree")
    max_concurrency: int = Field(default=4, ge=1, description="calls one sandbox runs at once")
    max_queue: int = Field(default=64, ge=0, description="callers that may wait for a busy sandbox")
    scratch_mib: int = Field(default=256, ge=1, description="size of each sandbox's writable home and temp dir")
    max_processes: int = Field(default=512, ge=16, description="processes and threads per sandbox")
    network: bool = Field(default=False, description="whether sandboxes get the host's network")
    max_context_mib: int = Field(default=64, ge=1, description="the largest context a call may carry either way")
    output_limit_bytes: int = Field(default=64 * 1024, ge=1024, description="stdout/stderr kept per call (tail)")
    isolation: IsolationLevel = IsolationLevel.DEFAULT
    launcher: LauncherKind = LauncherKind.ZYGOTE
    memory_sample_interval: float = Field(default=0.25, gt=0)
    restart_backoff_initial: float = Field(default=0.2, ge=0)
    restart_backoff_max: float = Field(default=10.0, ge=0)
    max_start_failures: int = Field(default=5, ge=1, description="failed restarts in a row before giving up")
    stable_after: float = Field(default=30.0, ge=0, description="uptime that resets the restart backoff")
    stop_grace: float = Field(default=5.0, ge=0, description="seconds in-flight calls get on unload or shutdown")
    cancel_grace: float = Field(default=2.0, ge=0,
                                description="how long a cancelled async task may take to stop before its "
                                            "sandbox is replaced")
    secrets_file: Path | None = Field(default=None, description="the operator's secrets (TOML, mode 0600)")
    vars_file: Path | None = Field(default=None, description="configuration variables per tenant (TOML)")
    sandbox_uid_base: int = Field(default=1_800_000_000, ge=1000, lt=2**32 - 65536,
                                  description="first host uid given to sandboxes when the service runs as root")

    @property
    def max_context_bytes(self) -> int:
        return self.max_context_mib * MIB

    def limits_for(self, package: PackageLimits | None) -> EffectiveLimits:
        package = package or PackageLimits()

        def pick(name: str) -> object:
            value = getattr(package, name)
            return getattr(self, name) if value is None else value

        return EffectiveLimits(**{name: pick(name) for name in EffectiveLimits.model_fields})
