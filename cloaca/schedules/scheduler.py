"""The scheduler: when a schedule is due, start its workflow through whatever runs workflows.

Like the DAG engine it knows nothing of where tasks run. It is given a store
(which schedules exist, and who fired what) and a `ScheduleRunner`: in-process
for `DefaultRunner`, sandboxes for the service. One asyncio task watches every
active, enabled schedule:

    cron      at `next_run_at`: claim the fire in the store (compare-and-set), then run
    trigger   every `poll_interval`: poll its function; `fire` -> record and run,
              `skip` -> nothing, an error -> a `poll_error` execution (the schedule goes on)

Without `allow_concurrent`, a schedule never has two runs at once: a cron fire
that comes while the last run is still going is recorded `skipped`, and a
trigger is not polled until its run has ended. Missed fires (the process was
down) are skipped, as the engine's default catch-up policy does.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from typing import Any, Awaitable, Callable, Protocol, TypeVar

from cloaca.schedules.cron import CronError, CronExpression
from cloaca.schedules.model import Outcome, PollOutcome, RunOutcome, Schedule, ScheduleKind
from cloaca.schedules.store import ScheduleStore
from cloaca.triggers import DEFAULT_POLL_INTERVAL, parse_duration_ms

log = logging.getLogger(__name__)

T = TypeVar("T")
IDLE_WAKE = 30.0  # seconds between looks at the store when nothing is due sooner
SKIP_PERSIST_EVERY = 10.0  # a poll that skips writes its time to the store at most this often (fires always do)


class ScheduleRunner(Protocol):
    async def run(self, schedule: Schedule, context: dict[str, Any],
                  started: Callable[[str], Awaitable[None]]) -> RunOutcome:
        """Run the schedule's workflow with `context` as its input; never raises for a failed run.

        `started(run_id)` is awaited when the run has an id, if that is known before it ends.
        """

    async def poll(self, schedule: Schedule) -> PollOutcome:
        """Call the trigger's function once; never raises (an error is a PollOutcome with `error`)."""


class Scheduler:
    def __init__(self, store: ScheduleStore, runner: ScheduleRunner,
                 in_thread: Callable[..., Awaitable[Any]], clock: Callable[[], float] = time.time,
                 on_outcome: Callable[[Schedule, Outcome], None] | None = None) -> None:
        self.store = store
        self._on_outcome = on_outcome  # told how each fire or poll that did something ended (metrics)
        self.runner = runner
        self._in_thread = in_thread  # runs a blocking store call off the event loop
        self._clock = clock
        self._running: dict[str, set[asyncio.Task[None]]] = {}  # schedule id -> its runs under way
        self._polling: set[str] = set()
        self._poll_errors: dict[str, str] = {}  # schedule id -> its last poll error, logged once until it changes
        self._last_poll: dict[str, float] = {}  # schedule id -> when it last answered (the store lags for skips)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        lost = await self._store(self.store.recover)
        if lost:
            log.warning("%d scheduled run(s) were under way when the service last stopped: recorded as lost", lost)
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="scheduler")

    def changed(self) -> None:
        """Schedules were added, changed or removed: look again now."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        runs = [task for tasks in self._running.values() for task in tasks]
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    async def _store(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store call, off the event loop."""
        return await self._in_thread(functools.partial(function, *args, **kwargs))

    def last_poll(self, schedule: Schedule) -> float | None:
        """When the trigger last answered a poll: this scheduler's own knowledge, else the store's."""
        return self._last_poll.get(schedule.id, schedule.last_poll_at)

    def running(self, schedule_id: str) -> int:
        return len(self._running.get(schedule_id, ()))

    def busy(self) -> set[str]:
        """The schedules with a run or a poll under way here."""
        return set(self._running) | set(self._polling)

    # --- the watch -----------------------------------------------------------------------

    async def _watch(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the tick: a change made while it reads the store wakes the next wait
            try:
                wait = await self._tick()
            except Exception:  # noqa: BLE001 - the scheduler must outlive any one schedule's trouble
                log.exception("the scheduler's tick failed")
                wait = 1.0
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))
            except asyncio.TimeoutError:
                pass

    async def _tick(self) -> float:
        """Start whatever is due; return how long until something may be due next."""
        now = self._clock()
        soonest = now + IDLE_WAKE
        for schedule in await self._store(self.store.due_candidates):
            if schedule.kind is ScheduleKind.CRON:
                if schedule.next_run_at is None:
                    continue
                following = schedule.next_run_at
                if following <= now:
                    following = await self._fire_cron(schedule, now)
                if following is not None:
                    soonest = min(soonest, following)
            else:
                interval = (schedule.poll_interval_ms or parse_duration_ms(DEFAULT_POLL_INTERVAL)) / 1000.0
                due = (self.last_poll(schedule) or 0.0) + interval
                if due <= now and self._may_poll(schedule):
                    self._polling.add(schedule.id)
                    self._spawn(schedule.id, self._poll(schedule))
                    due = now + interval
                soonest = min(soonest, max(due, now + 0.01))
        return soonest - self._clock()

    def _may_poll(self, schedule: Schedule) -> bool:
        if schedule.id in self._polling:
            return False
        return schedule.allow_concurrent or not self._running.get(schedule.id)

    def _spawn(self, schedule_id: str, work: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._running.setdefault(schedule_id, set()).add(task)

        def done(finished: asyncio.Task[None]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                log.error("schedule %s: its run or poll failed in the scheduler", schedule_id,
                          exc_info=finished.exception())
            tasks = self._running.get(schedule_id)
            if tasks is not None:
                tasks.discard(finished)
                if not tasks:
                    del self._running[schedule_id]
            self._wake.set()  # a trigger waiting for its run to end may poll again

        task.add_done_callback(done)

    def _outcome(self, schedule: Schedule, outcome: Outcome) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(schedule, outcome)
            except Exception:  # noqa: BLE001 - an observer never stops a schedule
                log.exception("the schedule observer failed")

    # --- cron ----------------------------------------------------------------------------

    async def _fire_cron(self, schedule: Schedule, now: float) -> float | None:
        """Claim and start the due fire; returns the following fire time (None: look again later)."""
        assert schedule.cron_expression is not None
        try:
            cron = CronExpression(schedule.cron_expression, schedule.timezone)
        except CronError as exc:
            log.error("schedule %s has a cron expression that no longer parses: %s", schedule.id, exc)
            return None
        following = cron.next_time(now)  # called once next_run_at <= now
        execution = await self._store(self.store.claim_cron_fire, schedule, following)
        if execution is None:
            return None  # fired already (by a previous life of this process, or another scheduler)
        if not schedule.allow_concurrent and self._running.get(schedule.id):
            await self._store(self.store.update_execution, execution.id, Outcome.SKIPPED, error=
                                  "the previous run had not finished (no overlapping runs without allow_concurrent)")
            log.info("schedule %s skipped a fire: its previous run is still going", schedule.id)
            self._outcome(schedule, Outcome.SKIPPED)
            return following
        self._spawn(schedule.id, self._run(schedule, execution.id, {}))
        return following

    # --- triggers --------------------------------------------------------------------------

    async def _poll(self, schedule: Schedule) -> None:
        try:
            outcome = await self.runner.poll(schedule)
        except Exception as exc:  # noqa: BLE001 - a runner that breaks its word is still a poll error
            outcome = PollOutcome(False, error=f"{type(exc).__name__}: {exc}")
        finally:
            self._polling.discard(schedule.id)
            self._last_poll[schedule.id] = self._clock()
        if outcome.error is not None:
            await self._store(self.store.record_poll, schedule, Outcome.POLL_ERROR, outcome.error)
            self._outcome(schedule, Outcome.POLL_ERROR)
            if self._poll_errors.get(schedule.id) != outcome.error:  # every poll is recorded; a repeat is not logged
                self._poll_errors[schedule.id] = outcome.error
                log.warning("trigger %s of %s: poll error: %s", schedule.name, schedule.package or "this process",
                            outcome.error)
            return
        if self._poll_errors.pop(schedule.id, None) is not None:
            log.info("trigger %s of %s polls without error again", schedule.name, schedule.package or "this process")
        if not outcome.fire:
            if self._clock() - (schedule.last_poll_at or 0.0) >= SKIP_PERSIST_EVERY:
                await self._store(self.store.record_poll, schedule, None)  # a skip costs no write most of the time
            return
        digest = hashlib.sha256(json.dumps(outcome.context, sort_keys=True).encode()).hexdigest()
        execution = await self._store(self.store.record_poll, schedule, Outcome.CLAIMED, None, digest)
        assert execution is not None
        await self._run(schedule, execution.id, outcome.context)

    # --- running ---------------------------------------------------------------------------

    async def _started(self, execution_id: str, run_id: str) -> None:
        await self._store(self.store.update_execution, execution_id, Outcome.RUNNING, run_id=run_id)

    async def _run(self, schedule: Schedule, execution_id: str, context: dict[str, Any]) -> None:
        await self._store(self.store.update_execution, execution_id, Outcome.RUNNING)
        try:
            result = await self.runner.run(schedule, context, functools.partial(self._started, execution_id))
        except asyncio.CancelledError:
            raise  # stopping: the next start records it lost
        except Exception as exc:  # noqa: BLE001 - recorded, and the schedule goes on
            result = RunOutcome("failed", error=f"{type(exc).__name__}: {exc}")
        outcome = Outcome.COMPLETED if result.status.lower() == "completed" else Outcome.FAILED
        await self._store(self.store.update_execution, execution_id, outcome, run_id=result.run_id,
                              error=result.error)
        self._outcome(schedule, outcome)
        log.info("schedule %s (%s) ran %s: %s", schedule.id, schedule.name or schedule.workflow, schedule.workflow,
                 outcome.value)
