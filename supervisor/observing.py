"""What the core tells an observer (the service's metrics): loads, unloads, sandbox events, calls.

Every method runs on the core's event loop, inside the call path for
`call_finished`: an observer keeps them cheap (counter updates, no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from supervisor.results import CallResult
from supervisor.sandboxes.events import SandboxEvent


@dataclass(frozen=True)
class SandboxFigures:
    """One loaded package's sandbox as a scrape reports it."""

    tenant: str
    package: str
    running: int  # calls holding a slot
    waiting: int  # calls admitted, waiting for a slot (the queue)
    memory_bytes: int
    memory_limit_bytes: int  # 0: none


class SupervisorObserver(Protocol):
    def package_loaded(self, key: str, tenant: str | None, name: str, tasks: list[str]) -> None: ...

    def package_unloaded(self, key: str) -> None: ...

    def sandbox_event(self, event: SandboxEvent) -> None: ...

    def call_finished(self, key: str, task: str, result: CallResult) -> None: ...

    def call_refused(self, key: str, code: str) -> None: ...
