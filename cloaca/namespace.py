"""Where a task is registered: `TaskNamespace`, `WorkflowContext`, and the stack of open contexts.

A task registers under the workflow context open on its thread when it is
decorated: the one `with WorkflowBuilder(...)` entered, or the one a loader
pushes around importing a package (tenant, package name, workflow name), so
bare module-level `@cloaca.task` works in packages. The stack is per thread,
as in the engine: decorating on a thread with no context is an error, with
a more specific one when another thread has a context open.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

DEFAULT_TENANT = "public"
DEFAULT_PACKAGE = "embedded"
SEPARATOR = "::"


@dataclass(frozen=True, init=False)
class TaskNamespace:
    """tenant::package::workflow::task."""

    tenant_id: str
    package_name: str
    workflow_id: str
    task_id: str

    def __init__(self, tenant_id: str, package_name: str, workflow_id: str, task_id: str) -> None:
        for part in (tenant_id, package_name, workflow_id, task_id):
            if not isinstance(part, str):
                raise TypeError(f"namespace parts are strings, not {type(part).__qualname__}")
        object.__setattr__(self, "tenant_id", tenant_id)
        object.__setattr__(self, "package_name", package_name)
        object.__setattr__(self, "workflow_id", workflow_id)
        object.__setattr__(self, "task_id", task_id)

    @staticmethod
    def from_string(text: str) -> "TaskNamespace":
        parts = text.split(SEPARATOR)
        if len(parts) != 4:
            raise ValueError(f"Invalid namespace format: expected 'tenant::package::workflow::task', got {text!r}")
        return TaskNamespace(*parts)

    def parent(self) -> "TaskNamespace":
        """The workflow's namespace: this one without its task id."""
        return TaskNamespace(self.tenant_id, self.package_name, self.workflow_id, "")

    def is_child_of(self, parent: "TaskNamespace") -> bool:
        return (self.workflow_key == parent.workflow_key and bool(self.task_id) and not parent.task_id)

    def is_sibling_of(self, other: "TaskNamespace") -> bool:
        return (self.workflow_key == other.workflow_key and bool(self.task_id) and bool(other.task_id)
                and self.task_id != other.task_id)

    @property
    def workflow_key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.package_name, self.workflow_id)

    def __str__(self) -> str:
        return SEPARATOR.join((self.tenant_id, self.package_name, self.workflow_id, self.task_id))

    def __repr__(self) -> str:
        return f"TaskNamespace({self.tenant_id!r}, {self.package_name!r}, {self.workflow_id!r}, {self.task_id!r})"


@dataclass(frozen=True)
class WorkflowContext:
    """tenant::package::workflow: where the tasks decorated inside it register."""

    tenant_id: str
    package_name: str
    workflow_id: str

    def task_namespace(self, task_id: str) -> TaskNamespace:
        return TaskNamespace(self.tenant_id, self.package_name, self.workflow_id, task_id)

    def resolve_dependency(self, task_name: str) -> TaskNamespace:
        return self.task_namespace(task_name)

    def workflow_namespace(self) -> TaskNamespace:
        return self.task_namespace("")

    def contains_namespace(self, namespace: TaskNamespace) -> bool:
        return namespace.workflow_key == self.key

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.package_name, self.workflow_id)

    def __str__(self) -> str:
        return SEPARATOR.join(self.key)

    def __repr__(self) -> str:
        return f"WorkflowContext({self.tenant_id!r}, {self.package_name!r}, {self.workflow_id!r})"


class _Stack(threading.local):
    def __init__(self) -> None:
        self.contexts: list[WorkflowContext] = []


_stack = _Stack()
_open_lock = threading.Lock()
_open_anywhere = 0  # contexts open on all threads: only to explain a cross-thread mistake

NO_CONTEXT = "No workflow context available. Tasks must be defined within a WorkflowBuilder context manager."
OTHER_THREAD = (
    "No workflow context on this thread, but one is active on a DIFFERENT thread. The workflow context is "
    "thread-local: `@task`/`cloaca.constructor` must be evaluated on the same thread that entered the "
    "WorkflowBuilder scope (i.e. at module scope during import), never from a thread spawned by the module. "
    "Registering from another thread would silently namespace the task under the wrong tenant/package."
)


def push_context(context: WorkflowContext) -> None:
    global _open_anywhere
    with _open_lock:
        _open_anywhere += 1
    _stack.contexts.append(context)


def pop_context() -> WorkflowContext | None:
    global _open_anywhere
    if not _stack.contexts:
        return None
    with _open_lock:
        _open_anywhere -= 1
    return _stack.contexts.pop()


def current_context() -> WorkflowContext:
    """The innermost context open on this thread; ValueError (the engine's message) when none is."""
    if _stack.contexts:
        return _stack.contexts[-1]
    raise ValueError(OTHER_THREAD if _open_anywhere > 0 else NO_CONTEXT)


@contextmanager
def workflow_context(context: WorkflowContext) -> Iterator[WorkflowContext]:
    """Hold `context` open around a block (what a loader does around importing a package)."""
    push_context(context)
    try:
        yield context
    finally:
        pop_context()
