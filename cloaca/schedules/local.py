"""`DefaultRunner`'s schedules: the scheduler on a thread of its own, running workflows in this process.

    caller threads ──register/list/enable──▶ ScheduleStore (SQLite, beside the runner's executions)
                   ──changed()──────────────▶ scheduler thread: an event loop running `Scheduler`
    scheduler thread ─run──▶ worker thread: DefaultRunner.execute(workflow, fired context)
                     ─poll─▶ worker thread: the @cloaca.trigger function, read by `poll_answer`

The thread starts with the first schedule (one registered through the runner,
or a `@cloaca.trigger` with `on=` declared in this process) and stops at
`DefaultRunner.shutdown()`. Triggers declared in this process are schedules
owned by nobody ("" owner, "" package), named after the trigger, and read
again from the registry whenever the runner's schedule API is used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from cloaca.context import Context
from cloaca.registry import REGISTRY
from cloaca.schedules.model import PollOutcome, RunOutcome, Schedule, TriggerDefinition
from cloaca.schedules.scheduler import Scheduler
from cloaca.schedules.store import ScheduleStore
from cloaca.triggers import DEFAULT_POLL_INTERVAL, parse_duration_ms, poll_answer

if TYPE_CHECKING:
    from cloaca.runner import DefaultRunner

log = logging.getLogger(__name__)
STOP_TIMEOUT = 10.0  # seconds shutdown() waits for the scheduler thread


def declared_triggers() -> list[TriggerDefinition]:
    """The `@cloaca.trigger`s of this process that name a workflow to fire."""
    definitions = []
    for spec in list(REGISTRY.triggers.values()):
        if not spec.workflow:
            continue
        definitions.append(TriggerDefinition(
            name=spec.name, workflow=spec.workflow, cron=spec.cron, timezone=spec.timezone,
            poll_interval_ms=None if spec.cron else parse_duration_ms(spec.poll_interval or DEFAULT_POLL_INTERVAL),
            allow_concurrent=spec.allow_concurrent))
    return definitions


class InProcessRunner:
    """Runs a schedule's workflow with `DefaultRunner.execute`, and polls triggers, in worker threads."""

    def __init__(self, runner: "DefaultRunner") -> None:
        self._runner = runner

    async def run(self, schedule: Schedule, context: dict[str, Any],
                  started: Callable[[str], Awaitable[None]]) -> RunOutcome:
        # DefaultRunner records a run when it ends: its id comes with the outcome.
        try:
            result, run_id = await asyncio.to_thread(self._runner._execute_recorded, schedule.workflow,
                                                     Context(context))
        except ValueError as exc:  # could not start (unknown workflow, shut down...)
            return RunOutcome("failed", error=str(exc))
        return RunOutcome(result.status, run_id=run_id, error=result.error_message)

    async def poll(self, schedule: Schedule) -> PollOutcome:
        spec = REGISTRY.triggers.get(schedule.name)
        if spec is None or spec.cron is not None:
            return PollOutcome(False, error=f"no poll trigger named {schedule.name!r} is declared in this process")
        try:
            fire, context = await asyncio.to_thread(_call_poll_function, spec.function)
        except Exception as exc:  # noqa: BLE001 - a poll error is recorded; the schedule goes on
            return PollOutcome(False, error=f"{type(exc).__name__}: {exc}")
        return PollOutcome(fire, context)


def _call_poll_function(function: Any) -> tuple[bool, dict[str, Any]]:
    value = function()
    if asyncio.iscoroutine(value):
        value = asyncio.run(value)
    return poll_answer(value)


class LocalSchedules:
    """The scheduler of one DefaultRunner, on its own thread once there is something to schedule."""

    def __init__(self, runner: "DefaultRunner", target: str) -> None:
        self.store = ScheduleStore(target)
        self._runner = runner
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduler: Scheduler | None = None
        self._closed = False

    def sync_triggers(self) -> None:
        """Make this process's declared triggers the runner's trigger schedules; start if there is work."""
        self.store.sync_package("", "", declared_triggers())
        self.changed()

    def changed(self) -> None:
        """Schedules changed: start the scheduler if it is needed, and have it look again."""
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                if not self.store.due_candidates():
                    return
                self._start()
        loop, scheduler = self._loop, self._scheduler
        if loop is not None and scheduler is not None:
            loop.call_soon_threadsafe(scheduler.changed)

    def _start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            scheduler = Scheduler(self.store, InProcessRunner(self._runner), asyncio.to_thread)
            try:
                loop.run_until_complete(scheduler.start())
                self._loop, self._scheduler = loop, scheduler
            finally:
                ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(scheduler.stop())
                loop.run_until_complete(loop.shutdown_default_executor())
                loop.close()

        self._thread = threading.Thread(target=serve, name="cloaca-schedules", daemon=True)
        self._thread.start()
        ready.wait()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, loop = self._thread, self._loop
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                log.warning("the schedule thread did not stop within %gs (a scheduled run is still going)",
                            STOP_TIMEOUT)
        self.store.close()
