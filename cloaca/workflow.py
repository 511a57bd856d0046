"""`cloaca.WorkflowBuilder`, `cloaca.Workflow` and `cloaca.register_workflow_constructor`.

As in the engine:
- `WorkflowBuilder(name, *, tenant=None, package=None, workflow=None)` opens the
  namespace public::embedded::<name> (each part overridable); tasks decorated
  inside its `with` block register there. On leaving the block, every task
  registered in that namespace becomes a workflow, validated and registered
  under the workflow id; no `add_task` is needed.
- `description`, `tag` and `add_task` return None (no chaining); `add_task`
  looks the task up in the builder's namespace.
- `build()` makes a `Workflow` from the tasks given to `add_task` only, and
  does not register it; an empty one is refused.
- `register_workflow_constructor(name, fn)` calls `fn()` at once and registers
  the `Workflow` it returns under `name`.

Beyond the engine: leaving a `with` block because of an exception does not
validate or register anything, so the original exception is the one you see.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping

from cloaca.graph import DependencyCycleError, check_graph
from cloaca.namespace import DEFAULT_PACKAGE, DEFAULT_TENANT, WorkflowContext, pop_context, push_context
from cloaca.registry import REGISTRY, TaskSpec, WorkflowDefinitionError
from cloaca.tasks import dependency_name


class Workflow:
    """A validated-or-not set of tasks with dependencies, named and versioned by content."""

    def __init__(self, name: str, context: WorkflowContext, tasks: list[TaskSpec], description: str = "",
                 tags: Mapping[str, str] | None = None) -> None:
        self._name = name
        self.context = context
        self.task_specs: dict[str, TaskSpec] = {spec.id: spec for spec in tasks}
        self._description = description
        self.tags = dict(tags or {})

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def version(self) -> str:
        """A hash of the workflow's content: its tasks, their dependencies, rules and retry policies."""
        content = [self._name, sorted(
            (spec.id, spec.dependencies, spec.trigger_rule, spec.retry.to_dict()) for spec in self.task_specs.values())]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def params(self) -> dict[str, dict[str, Any]]:
        """The workflow's params: every @cloaca.workflow_params on its tasks, merged."""
        merged: dict[str, dict[str, Any]] = {}
        for spec in self.task_specs.values():
            merged.update(spec.params)
        return merged

    @property
    def secrets(self) -> list[str]:
        names: dict[str, None] = {}
        for spec in self.task_specs.values():
            names.update(dict.fromkeys(spec.secrets))
        return list(names)

    def _graph(self) -> dict[str, list[str]]:
        return {task_id: list(spec.dependencies) for task_id, spec in self.task_specs.items()}

    def problems(self) -> str | None:
        """Why the workflow cannot run, in the engine's words, or None."""
        if not self.task_specs:
            return "Workflow cannot be empty"
        for task_id, spec in self.task_specs.items():
            for dep in spec.dependencies:
                if dep not in self.task_specs:
                    return f"Missing dependency: task '{task_id}' depends on '{dep}' which is not registered"
        try:
            check_graph(self._graph())
        except DependencyCycleError as exc:
            return "Circular dependency detected: [" + ", ".join(f'"{t}"' for t in exc.cycle) + "]"
        return None

    def validate(self) -> None:
        problem = self.problems()
        if problem is not None:
            raise WorkflowDefinitionError(f"Workflow validation failed: {problem}")

    def _namespace(self, task_id: str) -> str:
        return str(self.task_specs[task_id].namespace)

    def _order(self, what: str) -> list[str]:
        try:
            return check_graph(self._graph())
        except ValueError as exc:
            raise WorkflowDefinitionError(f"Failed to {what}: {exc}") from None

    def topological_sort(self) -> list[str]:
        return [self._namespace(task_id) for task_id in self._order("sort tasks")]

    def get_execution_levels(self) -> list[list[str]]:
        """Tasks that can run in parallel, level by level."""
        level: dict[str, int] = {}
        for task_id in self._order("get execution levels"):
            deps = self.task_specs[task_id].dependencies
            level[task_id] = 1 + max((level[dep] for dep in deps), default=-1)
        levels: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for task_id in self.task_specs:
            levels[level[task_id]].append(self._namespace(task_id))
        return levels

    def get_roots(self) -> list[str]:
        return [self._namespace(t) for t, spec in self.task_specs.items() if not spec.dependencies]

    def get_leaves(self) -> list[str]:
        needed = {dep for spec in self.task_specs.values() for dep in spec.dependencies}
        return [self._namespace(t) for t in self.task_specs if t not in needed]

    def __repr__(self) -> str:
        return f"Workflow(name='{self._name}', tasks={len(self.task_specs)})"


class WorkflowBuilder:
    def __init__(self, name: str, *, tenant: str | None = None, package: str | None = None,
                 workflow: str | None = None) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a workflow name is a string, not {type(name).__qualname__}")
        self._name = name
        self._context = WorkflowContext(tenant or DEFAULT_TENANT, package or DEFAULT_PACKAGE, workflow or name)
        self._description = ""
        self._tags: dict[str, str] = {}
        self._added: dict[str, TaskSpec] = {}

    @property
    def name(self) -> str:
        return self._name

    def description(self, description: str) -> None:
        self._description = str(description)

    def tag(self, key: str, value: str) -> None:
        self._tags[str(key)] = str(value)

    def add_task(self, task: Any) -> None:
        """Add a task registered in this builder's namespace, by id or by function."""
        if isinstance(task, str):
            task_id = task
        elif isinstance(getattr(task, "__name__", None), str):
            task_id = task.__name__
        else:
            raise WorkflowDefinitionError(
                "Task must be either a string task ID or a function object with __name__ attribute")
        spec = REGISTRY.get_task(self._context.task_namespace(task_id))
        if spec is None:
            raise WorkflowDefinitionError(
                f"Task '{task_id}' not found in registry. Make sure it was decorated with @task.")
        self._added[task_id] = spec

    def build(self) -> Workflow:
        """A Workflow of the tasks given to add_task; not registered."""
        workflow = Workflow(self._name, self._context, list(self._added.values()), self._description, self._tags)
        problem = workflow.problems()
        if problem is not None:
            raise WorkflowDefinitionError(f"Failed to build workflow: {problem}")
        return workflow

    def __enter__(self) -> "WorkflowBuilder":
        push_context(self._context)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        pop_context()
        if exc_type is not None:
            return False
        workflow = Workflow(self._context.workflow_id, self._context, REGISTRY.tasks_in(self._context.key),
                            self._description, self._tags)
        workflow.validate()
        REGISTRY.register_workflow(workflow)
        return False

    def __repr__(self) -> str:
        return f"WorkflowBuilder(name='{self._name}')"


def register_workflow_constructor(name: str, constructor: Callable[[], Workflow]) -> None:
    """Call `constructor()` now and register the Workflow it returns under `name`."""
    try:
        workflow = constructor()
    except Exception as exc:
        raise WorkflowDefinitionError(f"Failed to call workflow constructor: {type(exc).__name__}: {exc}") from exc
    if not isinstance(workflow, Workflow):
        raise WorkflowDefinitionError(
            f"Failed to extract workflow from constructor: expected a cloaca.Workflow, got "
            f"{type(workflow).__qualname__}")
    REGISTRY.register_workflow(workflow, name)


__all__ = ["Workflow", "WorkflowBuilder", "dependency_name", "register_workflow_constructor"]
