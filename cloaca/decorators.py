"""`@cloaca.task`, `@cloaca.trigger` and `cloaca.WorkflowBuilder`."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, TypeVar

from cloaca.registry import REGISTRY, RetryPolicy, TaskSpec, TriggerSpec, WorkflowDefinitionError, WorkflowSpec
from cloaca.rules import RuleLike, to_rule

F = TypeVar("F", bound=Callable[..., Any])


def _dependency_id(dep: Any) -> str:
    if isinstance(dep, str) and dep:
        return dep
    spec = getattr(dep, "__cloaca_task__", None)
    if isinstance(spec, TaskSpec):
        return spec.id
    raise WorkflowDefinitionError(
        f"a dependency must be a task id or a @cloaca.task function, not {dep!r}"
    )


def task(
    _function: Callable[..., Any] | None = None,
    *,
    id: str | None = None,  # noqa: A002 - the seeds' keyword
    dependencies: Iterable[Any] | None = None,
    retry_attempts: int = 0,
    retry_backoff: str = "fixed",
    retry_delay_ms: int = 1000,
    retry_max_delay_ms: int = 30_000,
    trigger_rules: RuleLike | None = None,
) -> Any:
    """Declare a workflow task; the function stays callable as it was.

    The task belongs to the enclosing `WorkflowBuilder`, or, outside any
    builder, to the default workflow named after the entry module.
    """
    retry = RetryPolicy(retry_attempts, str(retry_backoff).lower(), retry_delay_ms, retry_max_delay_ms)
    rule = to_rule(trigger_rules)
    deps = [_dependency_id(dep) for dep in (dependencies or [])]

    def decorate(function: F) -> F:
        if not callable(function):
            raise WorkflowDefinitionError(f"@cloaca.task decorates a function, not {function!r}")
        task_id = id if id is not None else function.__name__
        if not isinstance(task_id, str) or not task_id:
            raise WorkflowDefinitionError(f"a task id must be a non-empty string, not {task_id!r}")
        if task_id in deps:
            raise WorkflowDefinitionError(f"task {task_id!r} cannot depend on itself")
        workflow = REGISTRY.current_workflow
        spec = TaskSpec(
            id=task_id,
            function=function,
            dependencies=list(dict.fromkeys(deps)),
            retry=retry,
            trigger_rule=rule,
            workflow=workflow.name if workflow else None,
        )
        REGISTRY.add_task(spec)
        function.__cloaca_task__ = spec  # type: ignore[attr-defined]
        return function

    if _function is not None:  # used bare, as @cloaca.task
        return decorate(_function)
    return decorate


def trigger(
    _function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    workflow: str | None = None,
    **options: Any,
) -> Any:
    """Declare a trigger. It is recorded for discovery; nothing fires it yet."""
    try:
        json.dumps(options)
    except (TypeError, ValueError) as exc:
        raise WorkflowDefinitionError(f"trigger options must be JSON values: {exc}") from None

    def decorate(function: F) -> F:
        current = REGISTRY.current_workflow
        spec = TriggerSpec(
            name=name or function.__name__,
            function=function,
            workflow=workflow or (current.name if current else None),
            options=dict(options),
        )
        REGISTRY.add_trigger(spec)
        function.__cloaca_trigger__ = spec  # type: ignore[attr-defined]
        return function

    if _function is not None:
        return decorate(_function)
    return decorate


class WorkflowBuilder:
    """Groups the tasks declared inside its `with` block into one workflow."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise WorkflowDefinitionError(f"a workflow name must be a non-empty string, not {name!r}")
        existing = REGISTRY.workflows.get(name)
        self._spec = existing if existing is not None else WorkflowSpec(name)
        REGISTRY.workflows[name] = self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    def description(self, text: str) -> "WorkflowBuilder":
        self._spec.description = str(text)
        return self

    def tag(self, key: str, value: str) -> "WorkflowBuilder":
        self._spec.tags[str(key)] = str(value)
        return self

    def add_task(self, task_or_id: Any) -> "WorkflowBuilder":
        """Add a task declared elsewhere (by id or function) to this workflow."""
        task_id = _dependency_id(task_or_id)
        if task_id not in self._spec.task_ids:
            self._spec.task_ids.append(task_id)
        return self

    def build(self) -> WorkflowSpec:
        return self._spec

    def __enter__(self) -> "WorkflowBuilder":
        REGISTRY.builder_stack.append(self._spec)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        REGISTRY.builder_stack.remove(self._spec)
