"""What importing workflow code declares: tasks, workflows, triggers, and uses of unsupported features.

The decorators and builders write here; the local runner, the package loader
and the sandbox's discovery read from here. One registry per interpreter,
which inside a sandbox is exactly one package.

Tasks are keyed by their full `TaskNamespace` (tenant::package::workflow::task):
declaring the same one again replaces it, as in the engine. Workflows are
registered by name (a `with WorkflowBuilder(...)` block on exit, the loader
for a package's module-level tasks, or `register_workflow_constructor`).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from cloaca.namespace import TaskNamespace
from cloaca.retry import RetryPolicy
from cloaca.rules import ALWAYS

if TYPE_CHECKING:
    from cloaca.workflow import Workflow

PARAMS_ATTRIBUTE = "__cloaca_workflow_params__"
SECRETS_ATTRIBUTE = "__cloaca_workflow_secrets__"
SCHEMA_ATTRIBUTE = "__cloaca_boundary_schema__"


class WorkflowDefinitionError(ValueError):
    """A task, workflow or trigger declared in a way that cannot work (the engine raises ValueError)."""


@dataclass
class TaskSpec:
    namespace: TaskNamespace
    function: Callable[..., Any]
    dependencies: list[str]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    trigger_rule: dict[str, Any] = field(default_factory=lambda: dict(ALWAYS))
    on_success: Callable[..., Any] | None = None
    on_failure: Callable[..., Any] | None = None
    requires_handle: bool = False

    @property
    def id(self) -> str:
        return self.namespace.task_id

    @property
    def workflow(self) -> str:
        return self.namespace.workflow_id

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    @property
    def module(self) -> str:
        return getattr(self.function, "__module__", "") or ""

    @property
    def function_ref(self) -> str:
        """`module:qualname`, the manifest's `function` field."""
        name = getattr(self.function, "__qualname__", None) or getattr(self.function, "__name__", "<task>")
        return f"{self.module}:{name}"

    @property
    def docstring(self) -> str:
        return inspect.getdoc(self.function) or ""

    @property
    def params(self) -> dict[str, dict[str, Any]]:
        """Workflow params declared on this task's function with @cloaca.workflow_params."""
        return dict(getattr(self.function, PARAMS_ATTRIBUTE, {}))

    @property
    def secrets(self) -> list[str]:
        """Secret names declared on this task's function with @cloaca.workflow_secrets."""
        return list(getattr(self.function, SECRETS_ATTRIBUTE, ()))


@dataclass
class TriggerSpec:
    name: str
    function: Callable[..., Any]
    workflow: str | None  # the `on=` workflow
    poll_interval: str | None
    cron: str | None
    timezone: str | None
    allow_concurrent: bool

    @property
    def function_ref(self) -> str:
        return f"{self.function.__module__}:{self.function.__qualname__}"

    @property
    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"allow_concurrent": self.allow_concurrent}
        if self.cron is not None:
            options["cron"] = self.cron
            if self.timezone is not None:
                options["timezone"] = self.timezone
        else:
            options["poll_interval"] = self.poll_interval
        return options


@dataclass(frozen=True)
class UnsupportedUse:
    """A declaration of a feature this host does not run; a package that makes one is refused."""

    feature: str  # e.g. "computation graph", "constructor"
    name: str
    detail: str
    workflow: str | None = None  # the workflow it is part of, when it is part of one


class Registry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.tasks: dict[TaskNamespace, TaskSpec] = {}
        self.workflows: dict[str, Workflow] = {}
        self.triggers: dict[str, TriggerSpec] = {}
        self.unsupported: list[UnsupportedUse] = []

    def add_task(self, spec: TaskSpec) -> None:
        with self._lock:
            self.tasks[spec.namespace] = spec

    def get_task(self, namespace: TaskNamespace) -> TaskSpec | None:
        return self.tasks.get(namespace)

    def tasks_in(self, workflow_key: tuple[str, str, str]) -> list[TaskSpec]:
        """The tasks declared under tenant::package::workflow, in declaration order."""
        with self._lock:
            return [spec for ns, spec in self.tasks.items() if ns.workflow_key == workflow_key]

    def all_tasks(self) -> list[TaskSpec]:
        with self._lock:
            return list(self.tasks.values())

    def register_workflow(self, workflow: Workflow, name: str | None = None) -> None:
        with self._lock:
            self.workflows[name or workflow.name] = workflow

    def workflow(self, name: str) -> Workflow | None:
        return self.workflows.get(name)

    def add_trigger(self, spec: TriggerSpec) -> None:
        with self._lock:
            self.triggers[spec.name] = spec

    def add_unsupported(self, use: UnsupportedUse) -> None:
        with self._lock:
            self.unsupported.append(use)

    def clear(self) -> None:
        with self._lock:
            self.tasks.clear()
            self.workflows.clear()
            self.triggers.clear()
            self.unsupported.clear()


REGISTRY = Registry()
