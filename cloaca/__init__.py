"""The authoring API for workflow packages: `import cloaca`.

Declare tasks with `@cloaca.task`, group them with `cloaca.WorkflowBuilder`,
read configuration with `cloaca.var`, and run locally with
`cloaca.DefaultRunner`. The same code runs unchanged inside a sandbox.
"""

from cloaca._json import NotJSONError
from cloaca.context import Context, ContextKeyError
from cloaca.decorators import WorkflowBuilder, task, trigger
from cloaca.engine import Status, TaskOutcome, WorkflowRun
from cloaca.errors import TaskError
from cloaca.invoke import InvalidTaskResult
from cloaca.registry import WorkflowDefinitionError
from cloaca.rules import TriggerRuleError, all_of, any_of, context_value, none_of
from cloaca.runner import DefaultRunner, WorkflowNotFoundError
from cloaca.vars import VariableNotFoundError, var, var_or

# Errors raised into task code carry the public module name, so a
# traceback reads `cloaca.NotJSONError`, not a private module path.
for _error in (NotJSONError, ContextKeyError, InvalidTaskResult, VariableNotFoundError,
               WorkflowDefinitionError, TriggerRuleError, WorkflowNotFoundError):
    _error.__module__ = "cloaca"
del _error

__version__ = "0.1.0"

__all__ = [
    "Context", "ContextKeyError", "DefaultRunner", "InvalidTaskResult", "NotJSONError", "Status",
    "TaskError", "TaskOutcome", "TriggerRuleError", "VariableNotFoundError", "WorkflowBuilder",
    "WorkflowDefinitionError", "WorkflowNotFoundError", "WorkflowRun", "all_of", "any_of",
    "context_value", "none_of", "task", "trigger", "var", "var_or",
]
