"""Discovery: what a package's entry module declares, and whether it matches the manifest."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox_runtime.protocol import sandbox_pb2 as pb
from supervisor.errors import DiscoveryError
from supervisor.manifest import Manifest

DEFAULT_IMPORT_TIMEOUT = 60.0


class DiscoveredTask(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: str
    function: str
    dependencies: list[str] = Field(default_factory=list)
    is_async: bool = False
    docstring: str = ""
    workflow: str
    retry: dict[str, Any] = Field(default_factory=dict)  # cloaca.retry.RetryPolicy.to_dict()
    trigger_rule: dict[str, Any] = Field(default_factory=lambda: {"type": "Always"})
    requires_handle: bool = False
    has_on_success: bool = False
    has_on_failure: bool = False


class DiscoveredWorkflow(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    tasks: list[str]
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    version: str = ""
    secrets: list[str] = Field(default_factory=list)


class DiscoveredTrigger(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    function: str
    workflow: str
    options: dict[str, Any] = Field(default_factory=dict)


class DiscoveredProblem(BaseModel):
    model_config = ConfigDict(frozen=True)
    code: str
    message: str


class Discovery(BaseModel):
    model_config = ConfigDict(frozen=True)
    tasks: list[DiscoveredTask]
    workflows: list[DiscoveredWorkflow]
    triggers: list[DiscoveredTrigger] = Field(default_factory=list)
    problems: list[DiscoveredProblem] = Field(default_factory=list)
    package_workflow: str = ""
    secrets: list[str] = Field(default_factory=list)

    def task(self, task_id: str) -> DiscoveredTask | None:
        return next((task for task in self.tasks if task.id == task_id), None)


def import_timeout_message(seconds: float) -> str:
    return f"Python workflow import timed out after {seconds:g}s"


def discovery_from_proto(message: pb.Discovery) -> Discovery:
    """The sandbox's Discover answer as a validated Discovery."""
    return Discovery(
        tasks=[DiscoveredTask(id=t.id, function=t.function, dependencies=list(t.dependencies), is_async=t.is_async,
                              docstring=t.docstring, workflow=t.workflow, retry=_retry(t.retry),
                              trigger_rule=json.loads(t.trigger_rule_json or '{"type": "Always"}'),
                              requires_handle=t.requires_handle, has_on_success=t.has_on_success,
                              has_on_failure=t.has_on_failure)
               for t in message.tasks],
        workflows=[DiscoveredWorkflow(name=w.name, description=w.description, tags=dict(w.tags), tasks=list(w.tasks),
                                      params=json.loads(w.params_json or "{}"), version=w.version,
                                      secrets=list(w.secrets))
                   for w in message.workflows],
        triggers=[DiscoveredTrigger(name=t.name, function=t.function, workflow=t.workflow,
                                    options=json.loads(t.options_json or "{}"))
                  for t in message.triggers],
        problems=[DiscoveredProblem(code=p.code, message=p.message) for p in message.problems],
        package_workflow=message.package_workflow,
        secrets=list(message.secrets),
    )


def _retry(message: pb.RetryPolicy) -> dict[str, Any]:
    """A RetryPolicy message as cloaca.retry.RetryPolicy.to_dict() writes it."""
    return {"max_attempts": message.max_attempts, "attempts": message.attempts, "backoff": message.backoff,
            "backoff_base": message.backoff_base, "backoff_multiplier": message.backoff_multiplier,
            "delay_ms": message.delay_ms, "max_delay_ms": message.max_delay_ms, "jitter": message.jitter,
            "conditions": [{"type": c.type, **({"patterns": list(c.patterns)} if c.patterns else {})}
                           for c in message.conditions]}


def compare_with_manifest(manifest: Manifest, discovery: Discovery) -> None:
    """Fail unless the module's tasks and dependencies are exactly the manifest's."""
    declared = {task.id: sorted(task.dependencies) for task in manifest.tasks}
    found = {task.id: sorted(task.dependencies) for task in discovery.tasks}
    problems = []
    for task_id in declared.keys() - found.keys():
        problems.append(f"task {task_id!r} is in the manifest but the module does not define it")
    for task_id in found.keys() - declared.keys():
        problems.append(f"task {task_id!r} is defined by the module but missing from the manifest")
    for task_id in sorted(declared.keys() & found.keys()):
        if declared[task_id] != found[task_id]:
            problems.append(f"task {task_id!r} dependencies differ: manifest {declared[task_id]}, "
                            f"module {found[task_id]}")
    if problems:
        raise DiscoveryError("package does not match its manifest: " + "; ".join(sorted(problems)))
