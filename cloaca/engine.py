"""The DAG engine: runs a workflow's tasks in dependency order.

It knows nothing of where a task runs. An executor (a function taking a
task id and its input context, returning the output context or raising
`TaskFailed`) does the work: in this process for `DefaultRunner`, in a
sandbox for the supervisor. The engine owns ordering, retries, trigger
rules and how contexts flow along the edges.

Context flow: a task with no dependencies gets the workflow's input; one
with dependencies gets its dependencies' outputs merged in the order it
lists them. A skipped task passes its input through. The final context
merges the outputs of the tasks no finished task consumed.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from cloaca.context import Context
from cloaca.errors import TaskError, TaskFailed
from cloaca.graph import check_graph
from cloaca.registry import RetryPolicy
from cloaca.rules import Always, Rule

Executor = Callable[[str, dict[str, Any]], dict[str, Any]]

COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"


class Status(str):
    """A status that equals its name in any case: "completed" == "Completed".

    Packages written for the seeds' engine compare with both spellings.
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
    id: str
    dependencies: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    trigger_rule: Rule = field(default_factory=Always)


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
class WorkflowRun:
    workflow: str
    status: Status
    final_context: Context
    tasks: dict[str, TaskOutcome]
    duration_ms: float

    @property
    def error_message(self) -> str | None:
        error = self.error
        return str(error) if error else None

    @property
    def error(self) -> TaskError | None:
        """The first failed task's error, if any."""
        for outcome in self.tasks.values():
            if outcome.error is not None:
                return outcome.error
        return None


class Cancelled(Exception):
    """The engine was asked to stop while waiting to retry."""


def run_workflow(
    workflow: str,
    nodes: Sequence[TaskNode],
    context: Mapping[str, Any],
    execute: Executor,
    max_parallel: int = 4,
    stop: threading.Event | None = None,
) -> WorkflowRun:
    """Run every node once its dependencies are resolved; return the outcome."""
    by_id = {node.id: node for node in nodes}
    order = check_graph({node.id: node.dependencies for node in nodes})
    position = {task_id: index for index, task_id in enumerate(order)}
    stop = stop or threading.Event()
    started = time.perf_counter()

    outputs: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, TaskOutcome] = {}
    pending = list(order)
    running: dict[Future[TaskOutcome], str] = {}

    def input_for(node: TaskNode) -> dict[str, Any]:
        if not node.dependencies:
            return dict(context)
        merged: dict[str, Any] = {}
        for dep in node.dependencies:
            merged.update(outputs[dep])
        return merged

    def attempt(node: TaskNode, data: dict[str, Any]) -> TaskOutcome:
        begun = time.perf_counter()
        tries = 0
        while True:
            tries += 1
            try:
                outputs[node.id] = execute(node.id, data)
                return TaskOutcome(node.id, Status(COMPLETED), tries, _ms_since(begun))
            except TaskFailed as failure:
                if not failure.retryable or tries > node.retry.attempts or stop.is_set():
                    return TaskOutcome(node.id, Status(FAILED), tries, _ms_since(begun), failure.error)
                if stop.wait(node.retry.delay_seconds(tries)):
                    return TaskOutcome(node.id, Status(FAILED), tries, _ms_since(begun), failure.error)

    with ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix=f"wf-{workflow}") as pool:
        while pending or running:
            for task_id in list(pending):
                node = by_id[task_id]
                if any(dep not in outcomes for dep in node.dependencies):
                    continue
                pending.remove(task_id)
                failed_deps = [dep for dep in node.dependencies if outcomes[dep].status == FAILED
                               or outcomes[dep].skip_reason.startswith("upstream")]
                if failed_deps:
                    outcomes[task_id] = TaskOutcome(
                        task_id, Status(SKIPPED), skip_reason=f"upstream task {failed_deps[0]!r} failed")
                    continue
                data = input_for(node)
                if not node.trigger_rule.evaluate(data):
                    outputs[task_id] = data
                    outcomes[task_id] = TaskOutcome(task_id, Status(SKIPPED), skip_reason="trigger rule not met")
                    continue
                running[pool.submit(attempt, node, data)] = task_id
            if not running:
                continue  # everything ready was resolved without running; look again
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task_id = running.pop(future)
                outcomes[task_id] = future.result()

    consumed = {dep for node in nodes for dep in node.dependencies if node.id in outputs}
    final: dict[str, Any] = {}
    for task_id in order:
        if task_id in outputs and task_id not in consumed:
            final.update(outputs[task_id])
    if not outputs:
        final = dict(context)
    status = FAILED if any(o.status == FAILED for o in outcomes.values()) else COMPLETED
    ordered = {task_id: outcomes[task_id] for task_id in sorted(outcomes, key=position.__getitem__)}
    return WorkflowRun(workflow, Status(status), Context(final), ordered, _ms_since(started))


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
