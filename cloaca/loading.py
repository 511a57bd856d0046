"""Importing a package's entry module as the engine's loader does, and what is wrong with what it declared.

`import_package(entry_module, workflow_name, package_name)` opens the
workflow context tenant::package::workflow_name around the import, so bare
module-level `@cloaca.task` functions register there, then registers those
tasks as the workflow `workflow_name`. Workflows of `with WorkflowBuilder(...)`
blocks register themselves under their own names (older packages use them).

The sandbox runtime imports packages this way; so can a test or a local run:

    sys.path.insert(0, "my-package/workflow")
    import_package("my_package.tasks", "my_workflow", "my-package")
    cloaca.DefaultRunner().execute("my_workflow", cloaca.Context())

`package_problems(...)` lists what makes the package unloadable, each with
the loader's error code: an unsupported feature, an invalid workflow, a task
id declared in two workflows, or no task at all.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from cloaca.namespace import DEFAULT_TENANT, WorkflowContext, workflow_context
from cloaca.registry import REGISTRY, TaskSpec
from cloaca.workflow import Workflow

# Error codes, as supervisor.errors names them.
UNSUPPORTED_FEATURE = "unsupported_feature"
INVALID_TASK_GRAPH = "invalid_task_graph"
DUPLICATE_TASK = "duplicate_task"
EMPTY_PACKAGE = "empty_package"


@dataclass(frozen=True)
class Problem:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class ImportedPackage:
    entry_module: str
    context: WorkflowContext
    problems: tuple[Problem, ...]


def import_package(entry_module: str, workflow_name: str, package_name: str,
                   tenant: str = DEFAULT_TENANT) -> ImportedPackage:
    """Import `entry_module` under tenant::package_name::workflow_name; see the module docstring.

    Import errors propagate. What the import declared wrong is returned as
    problems, not raised, so a caller can report all of them.
    """
    context = WorkflowContext(tenant, package_name, workflow_name)
    with workflow_context(context):
        importlib.import_module(entry_module)
    problems: list[Problem] = []
    loose = REGISTRY.tasks_in(context.key)
    # When a WorkflowBuilder block already has this name (older packages do), the block's workflow is
    # that workflow; the module-level tasks stay callable by id but belong to no workflow.
    if loose and REGISTRY.workflow(workflow_name) is None:
        workflow = Workflow(workflow_name, context, loose)
        problem = workflow.problems()
        if problem is not None:
            problems.append(Problem(INVALID_TASK_GRAPH, f"Workflow validation failed: {problem}"))
        else:
            REGISTRY.register_workflow(workflow)
    problems.extend(package_problems(entry_module))
    return ImportedPackage(entry_module, context, tuple(problems))


def package_problems(entry_module: str) -> list[Problem]:
    """Unsupported features, a task id declared in two workflows, or no task at all."""
    problems = [Problem(UNSUPPORTED_FEATURE, unsupported_message(use.feature, use.detail))
                for use in REGISTRY.unsupported]
    owners: dict[str, str] = {}
    for spec in REGISTRY.all_tasks():
        owner = owners.setdefault(spec.id, spec.workflow)
        if owner != spec.workflow:
            problems.append(Problem(DUPLICATE_TASK, (
                f"task id {spec.id!r} is declared in workflows {owner!r} and {spec.workflow!r}: this host calls "
                "a package's tasks by id, so task ids must be unique within a package")))
    if not REGISTRY.tasks and not REGISTRY.unsupported:
        problems.append(Problem(EMPTY_PACKAGE, (
            f"Empty package: importing '{entry_module}' registered no tasks. Ensure the module uses "
            "@cloaca.task decorators (at module level, or inside a `with cloaca.WorkflowBuilder(...)` block).")))
    return problems


def unsupported_message(feature: str, detail: str) -> str:
    return (f"the package declares a {feature} ({detail}); this host does not run "
            f"{'computation graphs' if feature in ('computation graph', 'reactor') else feature + 's'} yet")


def package_tasks() -> dict[str, TaskSpec]:
    """Every declared task by id: the ids a sandbox answers calls for (unique once the package loads)."""
    return {spec.id: spec for spec in REGISTRY.all_tasks()}
