"""Import a package's entry module in the sandbox, and describe what it declared.

Runs inside the sandbox interpreter, whose registry holds only this package.
The supervisor tells the sandbox which package it is in the start request
(`PackageIdentity`: its name and workflow name, from its manifest; see
start.py); bare module-level `@cloaca.task` functions register under that
workflow name, as in the engine's loader.

The discovery document (`describe`) carries everything the supervisor's
engine needs per task (full retry policy, trigger rule) and everything the
loader judges (problems, each with its error code); callbacks stay here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cloaca import hosting
from cloaca.loading import ImportedPackage, import_package, package_problems, package_tasks
from cloaca.registry import REGISTRY, TaskSpec
from sandbox_runtime.protocol import sandbox_pb2 as pb


@dataclass(frozen=True)
class PackageIdentity:
    """Which package the sandbox holds: its name, and the workflow its module-level tasks form."""

    name: str
    workflow_name: str


_loaded: ImportedPackage | None = None


def load_package(entry_module: str, identity: PackageIdentity) -> ImportedPackage:
    """Import the package as the sandbox's only one; the wheel-only names disappear from `cloaca`."""
    global _loaded
    hosting.enter_sandbox()
    _loaded = import_package(entry_module, identity.workflow_name, identity.name)
    return _loaded


def describe(entry_module: str) -> dict[str, Any]:
    """The discovery document: tasks, workflows, triggers and problems, as JSON data."""
    if _loaded is not None and _loaded.entry_module == entry_module:
        problems = [problem.to_dict() for problem in _loaded.problems]
        package_workflow = _loaded.context.workflow_id
    else:
        problems = [problem.to_dict() for problem in package_problems(entry_module)]
        package_workflow = ""
    workflows = [{
        "name": name, "description": workflow.description, "tags": dict(workflow.tags),
        "tasks": list(workflow.task_specs), "params": workflow.params, "version": workflow.version,
        "secrets": workflow.secrets,
    } for name, workflow in REGISTRY.workflows.items()]
    member_of = {spec.id: name for name, workflow in REGISTRY.workflows.items() for spec in
                 workflow.task_specs.values()}
    # Every declared task is callable, also one in no workflow (module-level tasks beside a builder block
    # of the same name, in older packages).
    tasks = [_task(spec, member_of.get(spec.id, spec.workflow)) for spec in package_tasks().values()]
    secrets = sorted({secret for workflow in workflows for secret in workflow["secrets"]})
    return {
        "tasks": tasks,
        "workflows": workflows,
        "triggers": [
            {"name": trig.name, "function": trig.function_ref, "workflow": trig.workflow or package_workflow,
             "options": trig.options}
            for trig in REGISTRY.triggers.values()
        ],
        "problems": problems,
        "package_workflow": package_workflow,
        "secrets": secrets,
    }


def _task(spec: TaskSpec, workflow: str) -> dict[str, Any]:
    return {
        "id": spec.id,
        "function": spec.function_ref,
        "dependencies": list(spec.dependencies),
        "is_async": spec.is_async,
        "docstring": spec.docstring,
        "workflow": workflow,
        "retry": spec.retry.to_dict(),
        "trigger_rule": spec.trigger_rule,
        "requires_handle": spec.requires_handle,
        "has_on_success": spec.on_success is not None,
        "has_on_failure": spec.on_failure is not None,
    }


def discovery_message(document: dict[str, Any]) -> pb.Discovery:
    """The discovery document as the protocol's Discovery message."""
    return pb.Discovery(
        tasks=[pb.Task(id=t["id"], function=t["function"], dependencies=t["dependencies"], is_async=t["is_async"],
                       docstring=t["docstring"], workflow=t["workflow"], retry=_retry_message(t["retry"]),
                       trigger_rule_json=json.dumps(t["trigger_rule"]), requires_handle=t["requires_handle"],
                       has_on_success=t["has_on_success"], has_on_failure=t["has_on_failure"])
               for t in document["tasks"]],
        workflows=[pb.Workflow(name=w["name"], description=w["description"], tags=w["tags"], tasks=w["tasks"],
                               params_json=json.dumps(w["params"]), version=w["version"], secrets=w["secrets"])
                   for w in document["workflows"]],
        triggers=[pb.Trigger(name=t["name"], function=t["function"], workflow=t["workflow"],
                             options_json=json.dumps(t["options"]))
                  for t in document["triggers"]],
        problems=[pb.Problem(code=p["code"], message=p["message"]) for p in document["problems"]],
        package_workflow=document["package_workflow"],
        secrets=document["secrets"],
    )


def _retry_message(retry: dict[str, Any]) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        attempts=retry["attempts"], max_attempts=retry["max_attempts"], backoff=retry["backoff"],
        backoff_base=retry["backoff_base"], backoff_multiplier=retry["backoff_multiplier"],
        delay_ms=retry["delay_ms"], max_delay_ms=retry["max_delay_ms"], jitter=retry["jitter"],
        conditions=[pb.RetryCondition(type=c["type"], patterns=c.get("patterns", [])) for c in retry["conditions"]],
    )
