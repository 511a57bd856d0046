"""The authoring API for workflow packages: `import cloaca`.

Every name of the Cloacina engine's `cloaca` authorship contract is here,
with the engine's behaviour (see README, "Writing a workflow"); the same code
runs in a sandbox, under `DefaultRunner`, and on the engine. The wheel-only
names (`DefaultRunner`, `DefaultRunnerConfig`, `WorkflowResult`,
`_shutdown_all_runners`) are absent inside a sandbox, as they are inside the
engine's server. Computation graphs and constructors are importable, but a
package that declares one is refused at load.
"""

from __future__ import annotations

from typing import Any

from cloaca import hosting
from cloaca._json import NotJSONError
from cloaca.context import Context
from cloaca.errors import TaskError
from cloaca.handle import TaskHandle
from cloaca.inputs import (
    BoundarySchemaDecorator,
    WorkflowParamsDecorator,
    WorkflowSecretsDecorator,
    boundary_schema,
    workflow_params,
    workflow_secrets,
)
from cloaca.invoke import InvalidTaskResult
from cloaca.namespace import TaskNamespace, WorkflowContext
from cloaca.registry import WorkflowDefinitionError
from cloaca.retry import BackoffStrategy, RetryCondition, RetryPolicy, RetryPolicyBuilder
from cloaca.rules import (
    TriggerRuleError,
    all_of,
    always,
    any_of,
    context_value,
    none_of,
    task_failed,
    task_skipped,
    task_success,
)
from cloaca.tasks import TaskDecorator, task
from cloaca.triggers import TriggerDecorator, TriggerResult, trigger
from cloaca.unsupported import (
    ComputationGraphBuilder,
    batch_accumulator,
    constructor,
    node,
    passthrough_accumulator,
    polling_accumulator,
    reactor,
    state_accumulator,
    stream_accumulator,
)
from cloaca.vars import VariableNotFoundError, var, var_or
from cloaca.workflow import Workflow, WorkflowBuilder, register_workflow_constructor

# Errors raised into task code carry the public module name, so a traceback
# reads `cloaca.NotJSONError`, not a private module path.
for _error in (NotJSONError, InvalidTaskResult, VariableNotFoundError, WorkflowDefinitionError, TriggerRuleError):
    _error.__module__ = "cloaca"
del _error

__version__ = "0.2.0"

# The engine's authorship contract (crates/cloacina-python/src/lib.rs), in its order.
AUTHORING_NAMES = (
    "task", "TaskHandle", "TaskDecorator", "constructor",
    "context_value", "task_success", "task_failed", "task_skipped", "all_of", "any_of", "none_of", "always",
    "trigger", "TriggerResult", "TriggerDecorator", "reactor",
    "WorkflowBuilder", "Workflow", "register_workflow_constructor", "workflow_params", "WorkflowParamsDecorator",
    "workflow_secrets", "WorkflowSecretsDecorator", "boundary_schema",
    "Context", "WorkflowContext", "TaskNamespace",
    "RetryPolicy", "RetryPolicyBuilder", "BackoffStrategy", "RetryCondition",
    "ComputationGraphBuilder", "node", "passthrough_accumulator", "stream_accumulator", "polling_accumulator",
    "batch_accumulator", "state_accumulator",
    "var", "var_or",
)
# Ours, beyond the contract: errors with their own types, and the task error record.
EXTRA_NAMES = ("NotJSONError", "InvalidTaskResult", "VariableNotFoundError", "WorkflowDefinitionError",
               "TriggerRuleError", "TaskError", "BoundarySchemaDecorator")


def __getattr__(name: str) -> Any:
    """The wheel-only names: loaded on first use, and absent inside a sandbox."""
    if name in hosting.WHEEL_ONLY_NAMES:
        if hosting.in_sandbox():
            raise AttributeError(
                f"module 'cloaca' has no attribute '{name}': inside a sandbox the host is the runner "
                "(as in the Cloacina server); run workflows through the service")
        from cloaca import runner
        from cloaca.engine import WorkflowResult

        return {"DefaultRunner": runner.DefaultRunner, "DefaultRunnerConfig": runner.DefaultRunnerConfig,
                "WorkflowResult": WorkflowResult, "_shutdown_all_runners": runner._shutdown_all_runners}[name]
    raise AttributeError(f"module 'cloaca' has no attribute '{name}'")


def __dir__() -> list[str]:
    names = set(globals()) | set(AUTHORING_NAMES) | set(EXTRA_NAMES)
    if not hosting.in_sandbox():
        names |= set(hosting.WHEEL_ONLY_NAMES)
    return sorted(names)


__all__ = [*AUTHORING_NAMES, *EXTRA_NAMES]
