"""What happens to a sandbox over its life, as events: logged, counted, and kept per package.

A `Sandbox` (lifecycle.py) emits a `SandboxEvent` at each change of its life:
an incarnation started, exited, was retired or killed, a restart began, a
start failed, the sandbox gave up or stopped. Each is logged (one record, its
fields as `extra`, so `--log-format json` gives them as keys) and handed to the
sandbox's `SandboxObserver`, if any: the core keeps the recent ones per package
(supervisor/package_log.py) and the metrics count them. An observer also
receives what the sandbox writes outside calls.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloaca.errors import MEMORY_LIMIT, TaskError

log = logging.getLogger("supervisor.sandboxes.lifecycle")

MIB = 1024 * 1024


class EventKind(str, enum.Enum):
    STARTED = "started"  # an incarnation is ready: the first, or a replacement
    START_FAILED = "start_failed"  # a replacement did not come up; another try follows, with backoff
    RESTARTING = "restarting"  # a replacement is starting, and why (`cause`)
    RETIRED = "retired"  # takes no new calls (a call ran past its timeout, or was abandoned); killed once idle
    KILLED = "killed"  # the supervisor killed it (its memory over the limit, a broken link)
    EXITED = "exited"  # its process ended: how, why, and its memory peak
    FAILED = "failed"  # no more restarts: too many failed starts, or its files changed on disk
    STOPPED = "stopped"  # unloaded, replaced or shut down: no incarnation left


class Cause(str, enum.Enum):
    """Why an incarnation ended or was replaced: the label of restarts in metrics and `describe`."""

    CRASHED = "crashed"  # it exited or died by a signal on its own
    MEMORY_LIMIT = "memory_limit"  # the kernel's OOM killer at its cgroup limit, or our sampling
    TIMEOUT = "timeout"  # a call ran past its timeout
    ABANDONED = "abandoned"  # a caller went away while a call that cannot be cancelled ran
    LINK_BROKEN = "link_broken"  # its gRPC link broke while its process lived on
    STOPPED = "stopped"  # unloaded, replaced or shut down
    START_FAILED = "start_failed"
    INTEGRITY_FAILED = "integrity_failed"


def cause_of(error: TaskError) -> Cause:
    """The cause behind the error an incarnation's calls were given when it ended."""
    if error.kind == MEMORY_LIMIT:
        return Cause.MEMORY_LIMIT
    return {"SandboxLinkBroken": Cause.LINK_BROKEN, "SandboxStopped": Cause.STOPPED}.get(error.type, Cause.CRASHED)


_LEVELS = {EventKind.START_FAILED: logging.WARNING, EventKind.KILLED: logging.WARNING,
           EventKind.FAILED: logging.ERROR}


@dataclass(frozen=True)
class SandboxEvent:
    kind: EventKind
    package: str  # the key: name, or tenant/name
    tenant: str | None
    version: str
    incarnation: int
    pid: int = 0
    cause: str = ""
    detail: str = ""
    memory_peak_bytes: int = 0
    seconds: float = 0.0  # started: how long the start took; restarting: the backoff before it
    time: float = field(default_factory=time.time)

    @property
    def level(self) -> int:
        if self.kind is EventKind.EXITED and self.cause not in (Cause.STOPPED, Cause.TIMEOUT, Cause.ABANDONED):
            return logging.WARNING
        return _LEVELS.get(self.kind, logging.INFO)

    def sentence(self) -> str:
        """The event as a person reads it, without the package (the log line and `logs` add it)."""
        where = f"incarnation {self.incarnation}" + (f" (pid {self.pid})" if self.pid else "")
        why = f" [{self.cause}]" if self.cause else ""
        detail = f": {self.detail}" if self.detail else ""
        peak = f"; memory peak {self.memory_peak_bytes / MIB:.1f} MiB" if self.memory_peak_bytes else ""
        if self.kind is EventKind.STARTED:
            return f"{where} ready in {self.seconds * 1000:.0f} ms"
        if self.kind is EventKind.RESTARTING:
            delay = f" in {self.seconds:g}s" if self.seconds else ""
            return f"restarting{delay}{why}{detail}"
        return f"{where} {self.kind.value}{why}{detail}{peak}"

    def log_fields(self) -> dict[str, Any]:
        return {"event": self.kind.value, "package": self.package, "tenant": self.tenant or "",
                "version": self.version, "incarnation": self.incarnation, "pid": self.pid, "cause": self.cause,
                "memory_peak_bytes": self.memory_peak_bytes}


class SandboxObserver(Protocol):
    def event(self, event: SandboxEvent) -> None: ...

    def output(self, incarnation: int, data: bytes) -> None: ...


def emit(event: SandboxEvent, observer: SandboxObserver | None) -> None:
    """Log the event, then hand it to the observer (whose failure never reaches the sandbox's owner)."""
    log.log(event.level, "sandbox for %s %s: %s", event.package, event.version, event.sentence(),
            extra=event.log_fields())
    if observer is not None:
        try:
            observer.event(event)
        except Exception:  # noqa: BLE001 - observing must not break the lifecycle
            log.exception("observing an event of %s failed", event.package)
