"""Checks on a task graph: every dependency known, no cycle; and its order."""

from __future__ import annotations

from typing import Mapping, Sequence


class GraphError(ValueError):
    """A dependency on an unknown task, or a cycle."""


class UnknownDependencyError(GraphError):
    def __init__(self, missing: dict[str, list[str]]) -> None:
        self.missing = missing
        parts = [
            f"task {task!r} depends on unknown task{'s' if len(deps) > 1 else ''} "
            + ", ".join(repr(dep) for dep in deps)
            for task, deps in missing.items()
        ]
        super().__init__("; ".join(parts))


class DependencyCycleError(GraphError):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


def check_graph(dependencies: Mapping[str, Sequence[str]]) -> list[str]:
    """Validate the graph and return its task ids in a dependency order.

    The order is stable: among tasks that are ready together, the one
    declared first comes first.
    """
    missing: dict[str, list[str]] = {}
    for task_id, deps in dependencies.items():
        unknown = [dep for dep in deps if dep not in dependencies]
        if unknown:
            missing[task_id] = unknown
    if missing:
        raise UnknownDependencyError(missing)

    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in dependencies:
        if root in state:
            continue
        # Depth-first with an explicit stack: a hostile manifest's long
        # chain must not hit the interpreter's recursion limit.
        path: list[str] = [root]
        stack = [iter(dependencies[root])]
        state[root] = 1
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
            elif state.get(dep) == 1:
                raise DependencyCycleError(path[path.index(dep):] + [dep])
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(dependencies[dep]))
    return order
