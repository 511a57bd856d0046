"""What a workflow takes in: `@cloaca.workflow_params`, `@cloaca.workflow_secrets`, `@cloaca.boundary_schema`.

They are stacked on `@cloaca.task` functions and return the object unchanged,
as in the engine. There the compiler reads them from source; here they record
themselves on the function, and the task's workflow takes them up:

- `workflow_params(name=type, other=(type, default), ...)`: the workflow's
  params. When the workflow runs, each default becomes a top-level key of the
  initial context unless the caller gave that key; a param with no default
  must be given, and every given param must have its type. Types are `str`,
  `int`, `float`, `bool`, `list`, `dict`. (Beyond the engine: a plain JSON
  value is taken as a default of its own type.)
- `workflow_secrets("name", ...)`: the secrets the workflow reads with
  `context.secret(...)`. The host hands a sandbox only the declared ones.
- `boundary_schema(...)`: recorded, with no effect on running.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from cloaca._json import NotJSONError, to_json_value
from cloaca.registry import PARAMS_ATTRIBUTE, SCHEMA_ATTRIBUTE, SECRETS_ATTRIBUTE, WorkflowDefinitionError

T = TypeVar("T")
PARAM_TYPES: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                                list: "array", dict: "object"}


def param_type_matches(type_name: str, value: Any) -> bool:
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "array":
        return isinstance(value, list)
    if type_name == "object":
        return isinstance(value, dict)
    return False


def _type_name(param: str, declared: Any) -> str:
    name = PARAM_TYPES.get(declared) if isinstance(declared, type) else None
    if name is None:
        raise WorkflowDefinitionError(
            f"@cloaca.workflow_params: param {param!r} has type {declared!r}; use str, int, float, bool, list or dict")
    return name


def param_spec(param: str, declaration: Any) -> dict[str, Any]:
    """One param's declaration as data: {"type", "required"} plus "default" when there is one."""
    if isinstance(declaration, type):
        return {"type": _type_name(param, declaration), "required": True}
    if isinstance(declaration, tuple):
        if len(declaration) != 2:
            raise WorkflowDefinitionError(
                f"@cloaca.workflow_params: param {param!r} must be a type or a (type, default) pair")
        declared, default = declaration
        type_name = _type_name(param, declared)
    else:
        default = declaration
        type_name = next((name for kind, name in PARAM_TYPES.items() if type(default) is kind), "")
        if not type_name:
            raise WorkflowDefinitionError(
                f"@cloaca.workflow_params: param {param!r} must be a type, a (type, default) pair or a JSON value, "
                f"not {type(default).__qualname__}")
    try:
        default = to_json_value(param, default)
    except NotJSONError as exc:
        raise WorkflowDefinitionError(f"@cloaca.workflow_params: {exc}") from None
    if not param_type_matches(type_name, default):
        raise WorkflowDefinitionError(
            f"@cloaca.workflow_params: the default of {param!r} is {default!r}, not of type {type_name}")
    return {"type": type_name, "required": False, "default": default}


def _record(target: T, attribute: str, value: Any, merge: Callable[[Any, Any], Any], what: str) -> T:
    try:
        setattr(target, attribute, merge(getattr(target, attribute, None), value))
    except (AttributeError, TypeError):
        raise WorkflowDefinitionError(f"@cloaca.{what} decorates a task function, not {type(target).__qualname__}") \
            from None
    return target


class WorkflowParamsDecorator:
    def __init__(self, params: dict[str, dict[str, Any]]) -> None:
        self.params = params

    def __call__(self, target: T) -> T:
        return _record(target, PARAMS_ATTRIBUTE, self.params, lambda old, new: {**(old or {}), **new},
                       "workflow_params")


class WorkflowSecretsDecorator:
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def __call__(self, target: T) -> T:
        return _record(target, SECRETS_ATTRIBUTE, self.names,
                       lambda old, new: tuple(dict.fromkeys((*(old or ()), *new))), "workflow_secrets")


class BoundarySchemaDecorator:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    def __call__(self, target: T) -> T:
        return _record(target, SCHEMA_ATTRIBUTE, self.schema, lambda old, new: {**(old or {}), **new},
                       "boundary_schema")


def workflow_params(**params: Any) -> WorkflowParamsDecorator:
    return WorkflowParamsDecorator({name: param_spec(name, value) for name, value in params.items()})


def workflow_secrets(*names: str) -> WorkflowSecretsDecorator:
    for name in names:
        if not isinstance(name, str) or not name:
            raise WorkflowDefinitionError(f"@cloaca.workflow_secrets takes secret names (strings), not {name!r}")
    return WorkflowSecretsDecorator(tuple(names))


def boundary_schema(**schema: Any) -> BoundarySchemaDecorator:
    return BoundarySchemaDecorator(dict(schema))


def bind_params(params: dict[str, dict[str, Any]], given: dict[str, Any]) -> dict[str, Any]:
    """The initial context: `given` plus each param's default; ValueError naming what is missing or mistyped."""
    data = dict(given)
    problems = []
    for name, spec in params.items():
        if name not in data:
            if spec.get("required"):
                problems.append(f"required param {name!r} ({spec['type']}) was not given")
            else:
                data[name] = to_json_value(name, spec.get("default"))
        elif not param_type_matches(spec["type"], data[name]):
            problems.append(f"param {name!r} must be of type {spec['type']}, got {type(data[name]).__name__}")
    if problems:
        raise ValueError("; ".join(problems))
    return data
