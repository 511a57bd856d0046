"""The service's schedules: each loaded package's `@cloaca.trigger`s, owned by its tenant, fired in its sandbox.

    package loaded   -> its triggers become (or stay) its tenant's schedules   (ScheduleStore.sync_package)
    package unloaded -> they go inactive; history and pauses stay for a reload (ScheduleStore.deactivate_package)
    cron fire        -> the workflow runs as a RunWorkflow would, recorded with origin "schedule:<id>"
    poll             -> the trigger's function runs in the package's sandbox, as a call (same slots, timeout,
                        memory limit); its answer fires a run, skips, or is recorded as a poll error

The scheduler itself (`cloaca.schedules.scheduler`) is the same one DefaultRunner
uses in-process; this module gives it the sandboxes to run in and the registry's
store: the data dir's `schedules.db`, or over a shared registry the shared store,
where a lease decides which supervisor fires each schedule (`renew_leases`, every
heartbeat). Either way schedules and their history survive a restart, and a fire
is claimed at most once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

import orjson

from cloaca.engine import WorkflowRun
from cloaca.schedules.cron import CronError, CronExpression
from cloaca.schedules.model import Execution, Outcome, PollOutcome, RunOutcome, Schedule, ScheduleKind, TriggerDefinition
from cloaca.schedules.scheduler import Scheduler
from cloaca.schedules.store import ScheduleStore, UnknownScheduleError
from cloaca.triggers import DEFAULT_POLL_INTERVAL, parse_duration_ms
from supervisor.discovery import Discovery
from supervisor.errors import InvalidTriggerError
from supervisor.results import CallRejected, CallResult

log = logging.getLogger(__name__)



def schedule_definitions(discovery: Discovery) -> list[TriggerDefinition]:
    """A package's triggers as schedules; InvalidTriggerError names the first that cannot be scheduled."""
    workflows = {workflow.name for workflow in discovery.workflows}
    definitions = []
    for trigger in discovery.triggers:
        options = trigger.options
        where = f"trigger {trigger.name!r}"
        if trigger.workflow not in workflows:
            raise InvalidTriggerError(f"package refused: {where} fires workflow {trigger.workflow!r}, which the "
                                      f"package does not declare (its workflows: {', '.join(sorted(workflows))})")
        cron = options.get("cron")
        try:
            if cron is not None:
                zone = CronExpression(cron, options.get("timezone")).timezone_name
                definitions.append(TriggerDefinition(trigger.name, trigger.workflow, cron=cron, timezone=zone,
                                                     allow_concurrent=bool(options.get("allow_concurrent"))))
            else:
                interval = parse_duration_ms(options.get("poll_interval") or DEFAULT_POLL_INTERVAL)
                if interval <= 0:
                    raise ValueError("a poll interval must be longer than 0ms")
                definitions.append(TriggerDefinition(trigger.name, trigger.workflow, poll_interval_ms=interval,
                                                     allow_concurrent=bool(options.get("allow_concurrent"))))
        except (CronError, ValueError) as exc:
            raise InvalidTriggerError(f"package refused: {where}: {exc}") from None
    return definitions


class ScheduledWork(Protocol):
    """What the scheduler needs of the service: run a tenant's workflow, poll a tenant's trigger."""

    async def run_scheduled(self, tenant: str, package: str, workflow: str, context: dict[str, Any],
                            origin: str, started: Callable[[str], Awaitable[None]]) -> tuple[str, WorkflowRun]: ...

    async def poll_trigger(self, tenant: str, package: str, trigger: str) -> CallResult: ...


class SandboxRunner:
    """The scheduler's `ScheduleRunner` in the service: runs and polls go to the package's sandbox."""

    def __init__(self, work: ScheduledWork) -> None:
        self._work = work

    async def run(self, schedule: Schedule, context: dict[str, Any],
                  started: Callable[[str], Awaitable[None]]) -> RunOutcome:
        try:
            run_id, run = await self._work.run_scheduled(schedule.owner, schedule.package, schedule.workflow,
                                                         context, f"schedule:{schedule.id}", started)
        except (CallRejected, ValueError) as exc:  # unavailable, overloaded, a bad context: it never started
            return RunOutcome("failed", error=f"{type(exc).__name__}: {exc}")
        return RunOutcome(run.status, run_id=run_id, error=run.error_message)

    async def poll(self, schedule: Schedule) -> PollOutcome:
        try:
            result = await self._work.poll_trigger(schedule.owner, schedule.package, schedule.name)
        except (CallRejected, ValueError) as exc:
            return PollOutcome(False, error=f"{type(exc).__name__}: {exc}")
        if result.error is not None:
            return PollOutcome(False, error=f"{result.error.type}: {result.error.message}")
        answer = orjson.loads(result.context_json or b"{}")
        return PollOutcome(bool(answer.get("fire")), answer.get("context") or {})


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as operators see it: the stored schedule, its next fire, and its runs under way."""

    schedule: Schedule
    next_fire_at: float | None
    running: int
    last_poll_at: float | None  # the scheduler's own (a skip is not written to the store at every poll)


class ServiceSchedules:
    def __init__(self, store: ScheduleStore, work: ScheduledWork, in_thread: Callable[..., Awaitable[Any]],
                 on_outcome: Callable[[Schedule, Outcome], None] | None = None) -> None:
        self.store = store
        self._in_thread = in_thread
        self.scheduler = Scheduler(self.store, SandboxRunner(work), in_thread, on_outcome=on_outcome)
        self.held: set[str] = set()  # over a shared registry: the schedules this supervisor fires

    async def start(self) -> None:
        await self.scheduler.start()

    async def renew_leases(self, ready: set[tuple[str, str]]) -> None:
        """Over a shared registry, one lease round: keep, take and let go of schedules to fire, and mark lost
        the unfinished fires of supervisors that died. `ready`: the (tenant, package) ready here."""
        renew = getattr(self.store, "renew_leases", None)
        if renew is None:
            return  # the embedded store: this supervisor fires everything
        schedules = await self._in_thread(self.store.schedules, None, None, True, 1_000_000, 0)
        eligible = {schedule.id for schedule in schedules if (schedule.owner, schedule.package) in ready}
        held = await self._in_thread(renew, eligible, self.scheduler.busy())
        lost = await self._in_thread(self.store.recover)
        if lost:
            log.warning("%d scheduled run(s) of supervisors that stopped were recorded as lost", lost)
        if held != self.held:
            log.info("this supervisor now fires %d schedule(s) (was %d)", len(held), len(self.held))
            self.held = held
        self.scheduler.changed()  # and schedules paused or resumed on other supervisors are seen now

    async def package_loaded(self, tenant: str, package: str, discovery: Discovery) -> list[Schedule]:
        definitions = schedule_definitions(discovery)
        schedules = await self._in_thread(self.store.sync_package, tenant, package, definitions)
        self.scheduler.changed()
        if schedules:
            log.info("%s/%s: %d schedule(s) active", tenant, package, len(schedules))
        return schedules

    async def package_unloaded(self, tenant: str, package: str) -> None:
        await self._in_thread(self.store.deactivate_package, tenant, package)
        self.scheduler.changed()

    # --- what operators ask --------------------------------------------------------------

    async def list(self, tenant: str, package: str | None = None) -> list[ScheduleView]:
        schedules = await self._in_thread(self.store.schedules, None, tenant, False, 10_000, 0)
        return [self._view(s) for s in schedules if package in (None, "", s.package)]

    async def get(self, tenant: str, schedule_id: str) -> ScheduleView:
        return self._view(await self._owned(tenant, schedule_id))

    async def set_enabled(self, tenant: str, schedule_id: str, enabled: bool) -> ScheduleView:
        await self._owned(tenant, schedule_id)
        schedule = await self._in_thread(self.store.set_enabled, schedule_id, enabled)
        self.scheduler.changed()
        return self._view(schedule)

    async def executions(self, tenant: str, schedule_id: str, limit: int = 100, offset: int = 0) -> list[Execution]:
        await self._owned(tenant, schedule_id)
        return await self._in_thread(self.store.executions, schedule_id, limit, offset)

    async def _owned(self, tenant: str, schedule_id: str) -> Schedule:
        """The tenant's schedule; another tenant's is as unknown as one that never existed."""
        try:
            schedule = await self._in_thread(self.store.get, schedule_id)
        except UnknownScheduleError:
            schedule = None
        if schedule is None or schedule.owner != tenant or not schedule.active:
            raise UnknownScheduleError(f"no schedule {schedule_id!r} (list yours with `cloaca-sandbox schedules`)")
        return schedule

    def _view(self, schedule: Schedule) -> ScheduleView:
        if not schedule.enabled:
            next_fire = None
        elif schedule.kind is ScheduleKind.CRON:
            next_fire = schedule.next_run_at
        else:
            last_poll = self.scheduler.last_poll(schedule)
            next_fire = (last_poll or schedule.created_at) + (schedule.poll_interval_ms or 0) / 1000.0
        return ScheduleView(schedule, next_fire, self.scheduler.running(schedule.id),
                            self.scheduler.last_poll(schedule))

    async def close(self) -> None:
        await self.scheduler.stop()
        await self._in_thread(self.store.close)


__all__ = ["ScheduleView", "ServiceSchedules", "SandboxRunner", "UnknownScheduleError", "schedule_definitions"]
