"""Import a package's entry module and describe what it declared.

Runs inside the sandbox interpreter, whose registry holds only this package.
"""

from __future__ import annotations

import importlib
from typing import Any

from cloaca.graph import GraphError, check_graph
from cloaca.registry import REGISTRY, TaskSpec


class DeclarationError(Exception):
    """The module imported, but what it declares cannot work."""


def import_entry_module(entry_module: str) -> None:
    importlib.import_module(entry_module)


def package_tasks(entry_module: str) -> dict[str, TaskSpec]:
    """Every task of the package by id; ids must be unique across its workflows."""
    found: dict[str, TaskSpec] = {}
    for spec in REGISTRY.all_tasks():
        if spec.id in found:
            first = found[spec.id]
            raise DeclarationError(
                f"task id {spec.id!r} is declared twice: {first.function_ref} and {spec.function_ref}"
            )
        found[spec.id] = spec
    return found


def describe(entry_module: str) -> dict[str, Any]:
    """The discovery document: tasks, workflows and triggers, as JSON data."""
    tasks = package_tasks(entry_module)
    workflows = []
    for name in REGISTRY.workflow_names(default_name=entry_module):
        members = [spec.id for spec in REGISTRY.workflow_tasks(name)]
        declared = REGISTRY.workflows.get(name)
        unknown = [task_id for task_id in (declared.task_ids if declared else []) if task_id not in tasks]
        if unknown:
            raise DeclarationError(f"workflow {name!r} adds unknown task(s) {', '.join(map(repr, unknown))}")
        try:
            check_graph({task_id: tasks[task_id].dependencies for task_id in members})
        except GraphError as exc:
            raise DeclarationError(f"workflow {name!r}: {exc}") from None
        workflows.append({
            "name": name,
            "description": declared.description if declared else "",
            "tags": dict(declared.tags) if declared else {},
            "tasks": members,
        })
    return {
        "tasks": [
            {
                "id": spec.id,
                "function": spec.function_ref,
                "dependencies": list(spec.dependencies),
                "is_async": spec.is_async,
                "docstring": spec.docstring,
                "workflow": spec.workflow or entry_module,
                "retry": spec.retry.to_dict(),
                "trigger_rule": spec.trigger_rule.to_dict(),
            }
            for spec in tasks.values()
        ],
        "workflows": workflows,
        "triggers": [
            {"name": trig.name, "function": trig.function_ref,
             "workflow": trig.workflow or entry_module, "options": trig.options}
            for trig in REGISTRY.triggers.values()
        ],
    }
