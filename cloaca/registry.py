"""What importing a workflow module declares: tasks, workflows and triggers.

The decorators in `cloaca.decorators` write here; the local runner and the
sandbox's discovery read from here. One registry per interpreter, which is
exactly one package inside a sandbox.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from cloaca.rules import Rule

BACKOFFS = ("fixed", "exponential")


class WorkflowDefinitionError(ValueError):
    """A task, workflow or trigger declared in a way that cannot work."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a failed task is tried again."""

    attempts: int = 0  # retries after the first try
    backoff: str = "fixed"
    delay_ms: int = 1000
    max_delay_ms: int = 30_000

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 0:
            raise WorkflowDefinitionError(f"retry_attempts must be a whole number >= 0, not {self.attempts!r}")
        if self.backoff not in BACKOFFS:
            raise WorkflowDefinitionError(f"retry_backoff must be 'fixed' or 'exponential', not {self.backoff!r}")
        if not isinstance(self.delay_ms, int) or self.delay_ms < 0:
            raise WorkflowDefinitionError(f"retry_delay_ms must be a whole number >= 0, not {self.delay_ms!r}")

    def delay_seconds(self, retry_number: int) -> float:
        """The pause before retry `retry_number` (1 for the first retry)."""
        delay = self.delay_ms
        if self.backoff == "exponential":
            delay = self.delay_ms * (2 ** (retry_number - 1))
        return min(delay, max(self.max_delay_ms, self.delay_ms)) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "backoff": self.backoff,
                "delay_ms": self.delay_ms, "max_delay_ms": self.max_delay_ms}


@dataclass
class TaskSpec:
    id: str
    function: Callable[..., Any]
    dependencies: list[str]
    retry: RetryPolicy
    trigger_rule: Rule
    workflow: str | None  # None: the default workflow, named after the entry module

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    @property
    def module(self) -> str:
        return self.function.__module__

    @property
    def function_ref(self) -> str:
        """`module:qualname`, the manifest's `function` field."""
        return f"{self.function.__module__}:{self.function.__qualname__}"

    @property
    def docstring(self) -> str:
        return inspect.getdoc(self.function) or ""


@dataclass
class WorkflowSpec:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    task_ids: list[str] = field(default_factory=list)


@dataclass
class TriggerSpec:
    name: str
    function: Callable[..., Any]
    workflow: str | None
    options: dict[str, Any]

    @property
    def function_ref(self) -> str:
        return f"{self.function.__module__}:{self.function.__qualname__}"


class Registry:
    def __init__(self) -> None:
        # Keyed by (owner, task id): a workflow's name, or "module:<name>" for
        # tasks outside any builder, so two packages imported into one test
        # process do not overwrite each other's "extract".
        self.tasks: dict[tuple[str, str], TaskSpec] = {}
        self.workflows: dict[str, WorkflowSpec] = {}
        self.triggers: dict[str, TriggerSpec] = {}
        self.builder_stack: list[WorkflowSpec] = []

    @property
    def current_workflow(self) -> WorkflowSpec | None:
        return self.builder_stack[-1] if self.builder_stack else None

    def add_task(self, spec: TaskSpec) -> None:
        owner = spec.workflow if spec.workflow is not None else f"module:{spec.module}"
        self.tasks[(owner, spec.id)] = spec
        if spec.workflow is not None:
            workflow = self.workflows.setdefault(spec.workflow, WorkflowSpec(spec.workflow))
            if spec.id not in workflow.task_ids:
                workflow.task_ids.append(spec.id)

    def add_trigger(self, spec: TriggerSpec) -> None:
        self.triggers[spec.name] = spec

    def clear(self) -> None:
        self.tasks.clear()
        self.workflows.clear()
        self.triggers.clear()
        self.builder_stack.clear()

    def all_tasks(self) -> list[TaskSpec]:
        return list(self.tasks.values())

    def workflow_names(self, default_name: str | None = None) -> list[str]:
        names = list(self.workflows)
        if default_name and default_name not in names and self.default_tasks(default_name):
            names.append(default_name)
        return names

    def default_tasks(self, module_name: str) -> list[TaskSpec]:
        """Tasks declared outside any builder in `module_name` or its submodules."""
        prefix = module_name + "."
        return [
            spec for spec in self.tasks.values()
            if spec.workflow is None and (spec.module == module_name or spec.module.startswith(prefix))
        ]

    def workflow_tasks(self, name: str) -> list[TaskSpec]:
        """The tasks of workflow `name`, in declaration order.

        A name no builder declared falls back to the default workflow of the
        module of that name, as the seeds' loader names it after the entry module.
        """
        workflow = self.workflows.get(name)
        if workflow is None:
            return self.default_tasks(name)
        found = []
        for task_id in workflow.task_ids:
            spec = self.tasks.get((name, task_id)) or self._find_any(task_id)
            if spec is not None:
                found.append(spec)
        return found

    def _find_any(self, task_id: str) -> TaskSpec | None:
        for (_, spec_id), spec in self.tasks.items():
            if spec_id == task_id:
                return spec
        return None


REGISTRY = Registry()
