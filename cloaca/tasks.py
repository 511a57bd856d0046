"""`@cloaca.task(...)`: declare a task under the workflow context open on this thread.

As in the engine: every argument is keyword-only; the decorator returns the
function unchanged (tasks stay directly callable); the task's id defaults to
the function's `__name__`; a dependency given as a function resolves to the
function's `__name__`, not its task id; a second parameter named `handle` or
`task_handle` gets a `TaskHandle`; with no retry arguments a task gets the
default policy (3 attempts, exponential backoff from 1 s, jitter); and
declaring the same id again in the same workflow replaces the earlier task.

Beyond the engine: `@cloaca.task` without parentheses works too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, TypeVar

from cloaca.handle import wants_handle
from cloaca.namespace import current_context
from cloaca.registry import REGISTRY, TaskSpec, UnsupportedUse
from cloaca.retry import RETRY_KEYWORDS, RetryPolicy, policy_from_keywords
from cloaca.rules import normalize_rule

F = TypeVar("F", bound=Callable[..., Any])
TASK_ATTRIBUTE = "__cloaca_task__"


def dependency_name(index: int, dependency: Any) -> str:
    """A dependency's task name: the string itself, or a function's __name__ (not its task id)."""
    if isinstance(dependency, str):
        return dependency
    name = getattr(dependency, "__name__", None)
    if name is None:
        raise ValueError(
            f"Dependency {index} must be either a string or a function object with __name__ attribute")
    if not isinstance(name, str):
        raise ValueError(f"Dependency {index} has __name__ but it's not a string: {name!r}")
    return name


def _callable(name: str, value: Any) -> Callable[..., Any] | None:
    if value is not None and not callable(value):
        raise TypeError(f"@cloaca.task({name}=...) must be callable, not {type(value).__qualname__}")
    return value


class TaskDecorator:
    """What `cloaca.task(...)` returns; calling it on a function registers the task."""

    def __init__(self, *, id: str | None, dependencies: list[Any], retry_policy: RetryPolicy,  # noqa: A002
                 on_success: Callable[..., Any] | None, on_failure: Callable[..., Any] | None,
                 invokes: Any, post_invocation: Callable[..., Any] | None, trigger_rule: dict[str, Any]) -> None:
        self.id = id
        self.dependencies = dependencies
        self.retry_policy = retry_policy
        self.on_success = on_success
        self.on_failure = on_failure
        self.invokes = invokes
        self.post_invocation = post_invocation
        self.trigger_rule = trigger_rule

    def __call__(self, function: F) -> F:
        context = current_context()
        task_id = self.id if self.id is not None else getattr(function, "__name__", None)
        if not isinstance(task_id, str):
            raise TypeError(f"@cloaca.task decorates a function, not {type(function).__qualname__}")
        dependencies = [dependency_name(index, dep) for index, dep in enumerate(self.dependencies)]
        if self.post_invocation is not None and self.invokes is None:
            raise ValueError("@cloaca.task: `post_invocation` requires `invokes=...` to be set")
        if self.invokes is not None:
            graph = getattr(self.invokes, "NAME", None)
            if graph is None:
                raise ValueError("@cloaca.task(invokes=...): expected a ComputationGraphBuilder instance "
                                 "(must expose a `NAME` attribute)")
            REGISTRY.add_unsupported(UnsupportedUse(
                "computation graph", task_id, f"task {task_id!r} invokes computation graph {graph!r} "
                "(@cloaca.task(invokes=...))", context.workflow_id))
        spec = TaskSpec(
            namespace=context.task_namespace(task_id),
            function=function,
            dependencies=dependencies,
            retry=self.retry_policy,
            trigger_rule=self.trigger_rule,
            on_success=self.on_success,
            on_failure=self.on_failure,
            requires_handle=wants_handle(function),
        )
        REGISTRY.add_task(spec)
        try:
            setattr(function, TASK_ATTRIBUTE, spec)
        except (AttributeError, TypeError):
            pass  # e.g. a builtin: the registry still has it
        return function

    def __repr__(self) -> str:
        return f"TaskDecorator(id={self.id!r})"


def task(
    _function: Callable[..., Any] | None = None,
    *,
    id: str | None = None,  # noqa: A002 - the engine's keyword
    dependencies: Iterable[Any] | None = None,
    retry: RetryPolicy | None = None,
    retry_attempts: int | None = None,
    retry_backoff: str | None = None,
    retry_delay_ms: int | None = None,
    retry_max_delay_ms: int | None = None,
    retry_condition: str | None = None,
    retry_jitter: bool | None = None,
    on_success: Callable[[str, Any], Any] | None = None,
    on_failure: Callable[[str, str, Any], Any] | None = None,
    invokes: Any = None,
    post_invocation: Callable[..., Any] | None = None,
    trigger_rules: Any = None,
) -> Any:
    """Declare a workflow task. See the module docstring for the rules."""
    if id is not None and not isinstance(id, str):
        raise TypeError(f"@cloaca.task(id=...) must be a string, not {type(id).__qualname__}")
    if isinstance(dependencies, (str, bytes)):
        raise TypeError("@cloaca.task(dependencies=...) takes a list, not a single string")
    keywords = dict(zip(RETRY_KEYWORDS, (retry_attempts, retry_backoff, retry_delay_ms, retry_max_delay_ms,
                                         retry_condition, retry_jitter)))
    given = [name for name, value in keywords.items() if value is not None]
    if retry is not None:
        if given:
            raise ValueError(
                f"@task(retry=RetryPolicy(...)) cannot be combined with the retry_* keyword arguments "
                f"(got: {', '.join(given)}). Use the RetryPolicy object OR the keywords, not both.")
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"@cloaca.task(retry=...) takes a cloaca.RetryPolicy, not {type(retry).__qualname__}")
        policy = retry
    else:
        policy = policy_from_keywords(**keywords)
    decorator = TaskDecorator(
        id=id, dependencies=list(dependencies or []), retry_policy=policy,
        on_success=_callable("on_success", on_success), on_failure=_callable("on_failure", on_failure),
        invokes=invokes, post_invocation=_callable("post_invocation", post_invocation),
        trigger_rule=normalize_rule(trigger_rules),
    )
    if _function is not None:  # used bare, as @cloaca.task
        return decorator(_function)
    return decorator
