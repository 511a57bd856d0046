"""What the embedding API answers: call results, package info, and refusals.

A task's own failure is a CallResult with an error, not an exception.
`CallRejected` and its kinds are for requests that cannot be served at all;
each has a `code` the gRPC service maps to a status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from cloaca.engine import Status
from cloaca.errors import TaskError


@dataclass(frozen=True)
class CallOutput:
    stdout: str = ""
    stderr: str = ""
    stdout_dropped_bytes: int = 0
    stderr_dropped_bytes: int = 0


@dataclass(frozen=True)
class CallResult:
    """One call's answer. The context stays the JSON bytes the sandbox sent until someone reads `context`."""

    package: str
    task: str
    status: Status
    context_json: bytes | None
    error: TaskError | None
    output: CallOutput = field(default_factory=CallOutput)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @cached_property
    def context(self) -> dict[str, Any] | None:
        return None if self.context_json is None else orjson.loads(self.context_json)


@dataclass(frozen=True)
class PackageInfo:
    key: str  # what call() and friends take: the name, or "namespace/name"
    namespace: str | None
    name: str
    version: str
    state: str  # starting, ready, restarting, failed, stopping, stopped
    error: str | None
    tasks: list[str]
    workflows: list[str]
    pid: int | None  # the process serving the package (its pid on this host)
    restarts: int
    memory_bytes: int  # the sandbox's own memory: its cgroup's usage, or its processes' USS
    fingerprint: str
    warnings: list[str]
    isolation: dict[str, str] = field(default_factory=dict)  # confinement layer -> "on ..." / "off (why)"
    memory_peak_bytes: int = 0  # the highest sample of any of its incarnations
    restart_causes: dict[str, int] = field(default_factory=dict)  # restarts since it loaded, by cause
    limits: Any = None  # the EffectiveLimits its sandbox runs under


class CallRejected(Exception):
    """A request that cannot be served; `code` names why."""

    code = "rejected"

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.code


class UnknownPackageError(CallRejected):
    code = "not_found"


class UnknownTaskError(CallRejected):
    code = "not_found"


class InvalidContextError(CallRejected):
    code = "invalid_argument"


class PackageUnavailableError(CallRejected):
    code = "unavailable"


class OverloadedError(CallRejected):
    code = "resource_exhausted"
