"""A loaded package's workflow, as the engine runs it: the one place a Discovery becomes engine nodes.

The sandbox's discovery carries everything the engine needs per task (its
dependencies, full retry policy and trigger rule) and each workflow's params;
callbacks run in the sandbox with the task. Workflows are named as the
engine names them: a package.toml package's module-level tasks form the
workflow `[metadata] workflow_name`; `with WorkflowBuilder(name)` blocks form
workflows of their own names.

    plan = workflow_plan(discovery, "etl")       # UnknownTaskError when there is no such workflow
    data = plan.initial_context(given)           # ValueError when a param is missing or mistyped
    run = run_workflow(plan.name, plan.nodes, data, execute)
"""

from __future__ import annotations

from cloaca.engine import TaskNode, WorkflowPlan
from cloaca.retry import RetryPolicy
from supervisor.discovery import DiscoveredTask, Discovery
from supervisor.results import UnknownTaskError


def task_node(task: DiscoveredTask) -> TaskNode:
    return TaskNode(task.id, tuple(task.dependencies), RetryPolicy.from_dict(task.retry), dict(task.trigger_rule))


def workflow_plan(discovery: Discovery, workflow: str | None, package: str = "the package") -> WorkflowPlan:
    """The named workflow (or the only one, when `workflow` is None) ready for `cloaca.engine`."""
    names = [w.name for w in discovery.workflows]
    if workflow is None:
        if len(names) != 1:
            raise UnknownTaskError(f"{package} has workflows {names}: name the one to run")
        workflow = names[0]
    declared = next((w for w in discovery.workflows if w.name == workflow), None)
    if declared is None:
        raise UnknownTaskError(f"{package} has no workflow {workflow!r} (its workflows: {names})")
    tasks = {task.id: task for task in discovery.tasks}
    nodes = tuple(task_node(tasks[task_id]) for task_id in declared.tasks)
    return WorkflowPlan(declared.name, nodes, declared.params)
