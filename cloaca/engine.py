"""The DAG engine: runs a workflow's tasks in dependency order, with the engine's semantics.

It knows nothing of where a task runs. An executor (a function taking a task
id and its input data, returning the output data or raising `TaskFailed`)
does the work: in this process for `DefaultRunner`, in a sandbox for the
supervisor. The engine owns ordering, concurrency, retries, trigger rules,
timeouts and how contexts flow, as Cloacina's scheduler does (§1.13 of the
contract):

- a task is ready once every dependency is terminal (completed, failed or
  skipped); with the default `Always` rule it runs even after a dependency
  failed;
- its trigger rule is decided on its dependencies' outputs merged by plain
  overwrite (the workflow's input when it has none) and on task statuses; a
  false rule skips it: the body never runs and it has no output;
- its input is the workflow's input when it has no dependencies, else the
  smart merge of the outputs of the dependencies that completed (a failed or
  skipped dependency contributes nothing);
- a failed attempt is retried as its policy allows, after the policy's delay,
  with the same input; the delay does not hold a concurrency slot;
- the run fails if any task failed ("N task(s) failed, C completed, S
  skipped"), and its final context is the output of the task that completed
  last (the workflow's input when none did), not a merge of the leaves.

Concurrency: each attempt runs on its own thread and holds one of
`max_parallel` slots while it runs; `cloaca.slots.current_slot()` gives the
executor that slot, so a deferred task can give it back while it waits.

Data flow (one run):

    main thread: schedule ready tasks -> start attempt threads -> wait on `events`
                 <- ("started" | "done") events; retry timers and deadlines in between
    attempt thread: acquire a slot -> execute(task_id, input) -> post "done" -> release
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from cloaca._json import to_json_object
from cloaca.context import Context
from cloaca.errors import CRASHED, EXCEPTION, TIMEOUT, UNAVAILABLE, TaskError, TaskFailed, error_from_exception
from cloaca.graph import check_graph
from cloaca.inputs import bind_params
from cloaca.invoke import ENGINE_FAILURE_PREFIX
from cloaca.merge import overwrite_merge, smart_merge
from cloaca.retry import RetryPolicy, is_transient_message
from cloaca.rules import ALWAYS, evaluate
from cloaca.slots import SemaphoreSlot, reset_current_slot, set_current_slot

Executor = Callable[[str, dict[str, Any]], dict[str, Any]]

COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"
RULE_NOT_MET = "Trigger rules not satisfied"
TRANSIENT_KINDS = (TIMEOUT, CRASHED, UNAVAILABLE)


class Status(str):
    """A status that equals its name in any case: "Completed" == "completed".

    Its value is the engine's capitalised name; packages written for the seeds'
    engine compare with the lowercase one too.
    """

    def __new__(cls, value: str) -> "Status":
        return super().__new__(cls, value.capitalize())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.lower() == other.lower()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        return hash(self.lower())

    def __repr__(self) -> str:
        return f"Status({str.__str__(self)!r})"


@dataclass(frozen=True)
class TaskNode:
    """What the engine needs to know about one task."""

    id: str
    dependencies: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    trigger_rule: Mapping[str, Any] = field(default_factory=lambda: dict(ALWAYS))


@dataclass
class TaskOutcome:
    task_id: str
    status: Status
    attempts: int = 0
    duration_ms: float = 0.0
    error: TaskError | None = None
    skip_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status.lower(),
            "attempts": self.attempts,
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error.to_dict() if self.error else None,
            "skip_reason": self.skip_reason,
        }


@dataclass
class WorkflowResult:
    """A finished run: the engine's `WorkflowResult` fields, and per-task outcomes beyond them."""

    workflow: str
    status: Status
    final_context: Context
    tasks: dict[str, TaskOutcome]
    duration_ms: float
    start_time: str = ""
    end_time: str | None = None
    error_message: str | None = None

    @property
    def error(self) -> TaskError | None:
        """The first failed task's error, if any."""
        for outcome in self.tasks.values():
            if outcome.error is not None and outcome.status == FAILED:
                return outcome.error
        return None

    def __repr__(self) -> str:
        return f"WorkflowResult(status={str.__str__(self.status)}, error={self.error_message or 'None'})"


WorkflowRun = WorkflowResult  # the name the supervisor's code uses


def failure_message(error: TaskError) -> str:
    """A failure as the engine words it; what retry patterns and transient detection read."""
    if error.kind != EXCEPTION:
        return error.message
    if error.message.startswith(ENGINE_FAILURE_PREFIX):
        return error.message
    short_type = error.type.rsplit(".", 1)[-1]
    return f"{ENGINE_FAILURE_PREFIX}{short_type}: {error.message}"


def is_transient(error: TaskError) -> bool:
    return error.kind in TRANSIENT_KINDS or is_transient_message(failure_message(error))


@dataclass(frozen=True)
class WorkflowPlan:
    """A workflow ready to run: its nodes and its params (what a Discovery or a registry gives)."""

    name: str
    nodes: tuple[TaskNode, ...]
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def initial_context(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`context` with the params' defaults bound; ValueError when a param is missing or mistyped."""
        return bind_params(dict(self.params), dict(context))

    def run(self, context: Mapping[str, Any], execute: Executor, *, max_parallel: int = 4,
            stop: threading.Event | None = None, task_timeout: float | None = None,
            workflow_timeout: float | None = None, slots: threading.Semaphore | None = None) -> WorkflowResult:
        """Bind the params into `context` (ValueError when one is missing or mistyped), then run."""
        return run_workflow(self.name, self.nodes, self.initial_context(context), execute, max_parallel, stop,
                            task_timeout=task_timeout, workflow_timeout=workflow_timeout, slots=slots)


def run_workflow(workflow: str, nodes: Sequence[TaskNode], context: Mapping[str, Any], execute: Executor,
                 max_parallel: int = 4, stop: threading.Event | None = None, *, task_timeout: float | None = None,
                 workflow_timeout: float | None = None, slots: threading.Semaphore | None = None) -> WorkflowResult:
    """Run every node of a workflow; see the module docstring. Never raises for a task's failure.

    `slots`, when given, bounds concurrency instead of `max_parallel` and may be
    shared by several runs (a runner's limit across all its executions).
    """
    semaphore = slots if slots is not None else threading.Semaphore(max(1, max_parallel))
    return _Run(workflow, nodes, context, execute, semaphore, stop or threading.Event(),
                task_timeout, workflow_timeout).run()


@dataclass
class _Attempt:
    task_id: str
    number: int  # 1 for the first attempt
    slot: SemaphoreSlot
    started: float | None = None  # when it got its slot


class _Run:
    def __init__(self, workflow: str, nodes: Sequence[TaskNode], context: Mapping[str, Any], execute: Executor,
                 semaphore: threading.Semaphore, stop: threading.Event, task_timeout: float | None,
                 workflow_timeout: float | None) -> None:
        self.workflow = workflow
        self.nodes = {node.id: node for node in nodes}
        self.order = check_graph({node.id: node.dependencies for node in nodes})
        self.initial = dict(context)
        self.execute = execute
        self.semaphore = semaphore
        self.stop = stop
        self.task_timeout = task_timeout
        self.workflow_timeout = workflow_timeout
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

        self.pending = list(self.order)
        self.inputs: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.statuses: dict[str, str] = {}  # the engine's names: Completed, Failed, Skipped
        self.outcomes: dict[str, TaskOutcome] = {}
        self.attempts: dict[str, int] = {}
        self.last_error: dict[str, TaskError] = {}
        self.first_start: dict[str, float] = {}
        self.completion_order: dict[str, int] = {}
        self.running: dict[str, _Attempt] = {}
        self.retries: list[tuple[float, int, str]] = []
        self.sequence = itertools.count()
        self.timed_out = False

    # --- the main loop ---------------------------------------------------------------

    def run(self) -> WorkflowResult:
        started_wall = datetime.now(timezone.utc)
        started = time.monotonic()
        deadline = started + self.workflow_timeout if self.workflow_timeout else None
        while True:
            if not self.stop.is_set() and not self.timed_out:
                self._schedule_ready()
                self._start_due_retries()
            else:
                self._wind_down()
            if not self.pending and not self.running and not self.retries:
                break
            self._wait_for_event(deadline)
            if deadline is not None and time.monotonic() >= deadline and not self.timed_out:
                self._time_out_workflow()
        self._wind_down()
        return self._result(started_wall, started)

    def _wait_for_event(self, deadline: float | None) -> None:
        wake = [deadline] if deadline is not None else []
        if self.retries:
            wake.append(self.retries[0][0])
        for attempt in self.running.values():
            if self.task_timeout is not None and attempt.started is not None:
                wake.append(attempt.started + self.task_timeout)
        timeout = max(0.0, min(wake) - time.monotonic()) if wake else 0.5
        try:
            event = self.events.get(timeout=min(timeout, 0.5))  # wake regularly to notice `stop`
        except queue.Empty:
            event = None
        while event is not None:
            self._handle(event)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        self._check_task_deadlines()

    # --- scheduling ----------------------------------------------------------------------

    def _schedule_ready(self) -> None:
        progressed = True
        while progressed:  # a skip can make its dependents ready at once
            progressed = False
            for task_id in list(self.pending):
                node = self.nodes[task_id]
                if any(dep not in self.statuses for dep in node.dependencies):
                    continue
                self.pending.remove(task_id)
                progressed = True
                completed = [self.outputs[dep] for dep in node.dependencies if dep in self.outputs]
                rule_context = overwrite_merge(completed) if node.dependencies else self.initial
                if not evaluate(node.trigger_rule, rule_context, self.statuses):
                    self._finish(task_id, SKIPPED, skip_reason=RULE_NOT_MET)
                    continue
                self.inputs[task_id] = smart_merge(completed) if node.dependencies else dict(self.initial)
                self._start_attempt(task_id)

    def _start_attempt(self, task_id: str) -> None:
        number = self.attempts.get(task_id, 0) + 1
        self.attempts[task_id] = number
        attempt = _Attempt(task_id, number, SemaphoreSlot(self.semaphore))
        self.running[task_id] = attempt
        thread = threading.Thread(target=self._attempt, args=(attempt, to_json_object(self.inputs[task_id])),
                                  name=f"wf-{self.workflow}-{task_id}-{number}", daemon=True)
        thread.start()

    def _attempt(self, attempt: _Attempt, data: dict[str, Any]) -> None:
        """On the attempt's own thread: take a slot, run the executor, post the outcome."""
        if not attempt.slot.acquire():
            return
        self.events.put(("started", attempt, time.monotonic()))
        token = set_current_slot(attempt.slot)
        try:
            output = self.execute(attempt.task_id, data)
            self.events.put(("done", attempt, output, None))
        except TaskFailed as failure:
            self.events.put(("done", attempt, None, failure))
        except BaseException as exc:  # noqa: BLE001 - an executor's own bug still ends the attempt
            self.events.put(("done", attempt, None, TaskFailed(error_from_exception(exc))))
        finally:
            attempt.slot.release()
            reset_current_slot(token)

    def _start_due_retries(self) -> None:
        now = time.monotonic()
        while self.retries and self.retries[0][0] <= now:
            _, _, task_id = heapq.heappop(self.retries)
            self._start_attempt(task_id)

    # --- events ----------------------------------------------------------------------------

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind, attempt = event[0], event[1]
        if self.running.get(attempt.task_id) is not attempt:
            return  # an attempt we gave up on (timed out) finished late
        if kind == "started":
            attempt.started = event[2]
            self.first_start.setdefault(attempt.task_id, event[2])
            return
        _, _, output, failure = event
        del self.running[attempt.task_id]
        if failure is None:
            self.outputs[attempt.task_id] = output if isinstance(output, dict) else dict(output)
            self._finish(attempt.task_id, COMPLETED)
        else:
            self._failed_attempt(attempt, failure)

    def _failed_attempt(self, attempt: _Attempt, failure: TaskFailed) -> None:
        task_id = attempt.task_id
        self.last_error[task_id] = failure.error
        policy = self.nodes[task_id].retry
        may_retry = failure.retryable and not self.stop.is_set() and not self.timed_out and policy.allows_retry(
            attempt.number, failure_message(failure.error), is_transient(failure.error))
        if may_retry:
            at = time.monotonic() + policy.delay_ms(attempt.number) / 1000.0
            heapq.heappush(self.retries, (at, next(self.sequence), task_id))
        else:
            self._finish(task_id, FAILED, error=failure.error)

    def _check_task_deadlines(self) -> None:
        if self.task_timeout is None:
            return
        now = time.monotonic()
        for attempt in list(self.running.values()):
            if attempt.started is not None and now - attempt.started >= self.task_timeout:
                self._abandon(attempt, TaskError(
                    TIMEOUT, "TimeoutError", f"task '{attempt.task_id}' did not finish within "
                    f"{self.task_timeout:g}s (the runner's task_timeout_seconds)"))

    def _abandon(self, attempt: _Attempt, error: TaskError) -> None:
        """Stop waiting for an attempt (its thread may go on): it failed with `error`."""
        del self.running[attempt.task_id]
        attempt.slot.abandon()
        self._failed_attempt(attempt, TaskFailed(error))

    def _time_out_workflow(self) -> None:
        self.timed_out = True
        for attempt in list(self.running.values()):
            self._abandon(attempt, TaskError(
                TIMEOUT, "TimeoutError", f"the workflow ran past its {self.workflow_timeout:g}s timeout"))

    def _wind_down(self) -> None:
        """Stopping or timed out: nothing new starts; waiting retries fail with their last error."""
        if not (self.stop.is_set() or self.timed_out):
            return
        while self.retries:
            _, _, task_id = heapq.heappop(self.retries)
            self._finish(task_id, FAILED, error=self.last_error[task_id])
        reason = "the workflow timed out before it ran" if self.timed_out else "the run was stopped before it ran"
        for task_id in list(self.pending):
            self.pending.remove(task_id)
            self._finish(task_id, SKIPPED, skip_reason=reason)

    def _finish(self, task_id: str, status: str, *, error: TaskError | None = None, skip_reason: str = "") -> None:
        self.statuses[task_id] = status.capitalize()
        if status == COMPLETED:
            self.completion_order[task_id] = next(self.sequence)
        begun = self.first_start.get(task_id)
        duration = (time.monotonic() - begun) * 1000.0 if begun is not None else 0.0
        self.outcomes[task_id] = TaskOutcome(task_id, Status(status), self.attempts.get(task_id, 0), duration,
                                             error, skip_reason)

    # --- the result ----------------------------------------------------------------------------

    def _result(self, started_wall: datetime, started: float) -> WorkflowResult:
        counts = {name: sum(1 for o in self.outcomes.values() if o.status == name)
                  for name in (COMPLETED, FAILED, SKIPPED)}
        failed = counts[FAILED] > 0 or self.timed_out
        message = None
        if failed:
            message = f"{counts[FAILED]} task(s) failed, {counts[COMPLETED]} completed, {counts[SKIPPED]} skipped"
            if self.timed_out:
                message = f"workflow timed out after {self.workflow_timeout:g}s; {message}"
        if self.completion_order:
            last = max(self.completion_order, key=lambda t: (self.completion_order[t], t))
            final = self.outputs[last]
        else:
            final = self.initial
        position = {task_id: index for index, task_id in enumerate(self.order)}
        ordered = {t: self.outcomes[t] for t in sorted(self.outcomes, key=position.__getitem__)}
        return WorkflowResult(
            workflow=self.workflow, status=Status(FAILED if failed else COMPLETED), final_context=Context(final),
            tasks=ordered, duration_ms=(time.monotonic() - started) * 1000.0,
            start_time=started_wall.isoformat(), end_time=datetime.now(timezone.utc).isoformat(),
            error_message=message)
