"""Trigger rules: plain dicts that decide, once a task's dependencies are done, whether it runs.

The helpers return the engine's serde shape, so code that inspects them sees
what it would see there:

    context_value("mode", "==", "full")  -> {"type": "ContextValue", "key": "mode", "operator": "Equals", "value": "full"}
    task_success("extract")              -> {"type": "TaskSuccess", "task_name": "extract"}
    all_of(a, b)                         -> {"type": "All", "conditions": [a, b]}
    always()                             -> {"type": "Always"}

`normalize_rule` checks what an author passes as `trigger_rules=` and wraps a
bare condition in `All`, as the engine does. `evaluate` decides a rule from
the dependency-merged context and the statuses of the workflow's tasks.

Beyond the engine (engine code cannot notice): the operators
`GreaterThanOrEqual` (`>=`) and `LessThanOrEqual` (`<=`), rules nested inside
combinators, a list meaning `all_of`, and `context_value` without a value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloaca._json import NotJSONError, to_json_value

ALWAYS: dict[str, Any] = {"type": "Always"}
CONDITION_TYPES = ("ContextValue", "TaskSuccess", "TaskFailed", "TaskSkipped")
RULE_TYPES = ("All", "Any", "None")
TASK_CONDITION_STATUS = {"TaskSuccess": "Completed", "TaskFailed": "Failed", "TaskSkipped": "Skipped"}

OPERATORS = ("Equals", "NotEquals", "GreaterThan", "LessThan", "Contains", "NotContains", "Exists", "NotExists",
             "GreaterThanOrEqual", "LessThanOrEqual")
_ALIASES = {name.lower(): name for name in OPERATORS}
_ALIASES.update({"==": "Equals", "eq": "Equals", "!=": "NotEquals", "ne": "NotEquals", ">": "GreaterThan",
                 "gt": "GreaterThan", "<": "LessThan", "lt": "LessThan", ">=": "GreaterThanOrEqual",
                 "ge": "GreaterThanOrEqual", "gte": "GreaterThanOrEqual", "<=": "LessThanOrEqual",
                 "le": "LessThanOrEqual", "lte": "LessThanOrEqual"})


class TriggerRuleError(ValueError):
    """A trigger rule that is malformed (the engine raises ValueError too)."""


def canonical_operator(operator: str) -> str:
    name = _ALIASES.get(str(operator).lower().replace("_", ""))
    if name is None:
        raise TriggerRuleError(
            f"trigger rule: unknown operator '{operator}'. Use one of: Equals, NotEquals, GreaterThan, LessThan, "
            "Contains, NotContains, Exists, NotExists (or GreaterThanOrEqual, LessThanOrEqual).")
    return name


def _json(where: str, value: Any) -> Any:
    try:
        return to_json_value(where, value)
    except NotJSONError as exc:
        raise TriggerRuleError(f"{where}: value not JSON-serializable: {exc}") from None


# --- the helpers ---------------------------------------------------------------------

def context_value(key: str, operator: str, value: Any = None) -> dict[str, Any]:
    """A condition on one key of the dependency-merged context."""
    if not isinstance(key, str):
        raise TypeError(f"context_value: key must be a string, not {type(key).__qualname__}")
    return {"type": "ContextValue", "key": key, "operator": canonical_operator(operator),
            "value": _json("context_value", value)}


def _task_condition(kind: str, task_name: str) -> dict[str, Any]:
    if not isinstance(task_name, str):
        raise TypeError(f"{kind}: task_name must be a string, not {type(task_name).__qualname__}")
    return {"type": kind, "task_name": task_name}


def task_success(task_name: str) -> dict[str, Any]:
    """True when that task completed."""
    return _task_condition("TaskSuccess", task_name)


def task_failed(task_name: str) -> dict[str, Any]:
    """True when that task failed (after its retries)."""
    return _task_condition("TaskFailed", task_name)


def task_skipped(task_name: str) -> dict[str, Any]:
    """True when that task was skipped."""
    return _task_condition("TaskSkipped", task_name)


def _combine(kind: str, conditions: tuple[Any, ...]) -> dict[str, Any]:
    if len(conditions) == 1 and isinstance(conditions[0], list):
        conditions = tuple(conditions[0])
    return {"type": kind, "conditions": [_json("trigger rule condition", c) for c in conditions]}


def all_of(*conditions: Any) -> dict[str, Any]:
    """Run only if all conditions hold."""
    return _combine("All", conditions)


def any_of(*conditions: Any) -> dict[str, Any]:
    """Run if any condition holds."""
    return _combine("Any", conditions)


def none_of(*conditions: Any) -> dict[str, Any]:
    """Run only if no condition holds."""
    return _combine("None", conditions)


def always() -> dict[str, Any]:
    """The default rule: always run (also after a dependency failed)."""
    return dict(ALWAYS)


# --- checking what an author passed ---------------------------------------------------

def normalize_rule(rule: Any) -> dict[str, Any]:
    """The canonical rule for `trigger_rules=`: None is Always, a bare condition or a list is All."""
    if rule is None:
        return dict(ALWAYS)
    if isinstance(rule, list):
        rule = all_of(*rule)
    data = _json("@cloaca.task(trigger_rules=...)", rule)
    if isinstance(data, dict) and data.get("type") in CONDITION_TYPES:
        data = {"type": "All", "conditions": [data]}
    _check(data, "trigger_rules")
    return data


def _invalid(where: str, why: str) -> TriggerRuleError:
    return TriggerRuleError(
        f"@cloaca.task(trigger_rules=...): invalid trigger rule at {where}: {why}. Build rules with "
        "cloaca.context_value / task_success / task_failed / task_skipped, optionally inside "
        "cloaca.all_of / any_of / none_of.")


def _check(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise _invalid(where, f"expected a rule object, got {type(node).__name__}")
    kind = node.get("type")
    if kind == "Always":
        return
    if kind in RULE_TYPES:
        conditions = node.get("conditions")
        if not isinstance(conditions, list):
            raise _invalid(where, f"{kind} needs a list of conditions")
        for index, condition in enumerate(conditions):
            _check(condition, f"{where}.conditions[{index}]")
        return
    if kind == "ContextValue":
        if not isinstance(node.get("key"), str):
            raise _invalid(where, "ContextValue needs a string key")
        node["operator"] = canonical_operator(node.get("operator", ""))
        node.setdefault("value", None)
        return
    if kind in TASK_CONDITION_STATUS:
        if not isinstance(node.get("task_name"), str):
            raise _invalid(where, f"{kind} needs a string task_name")
        return
    raise _invalid(where, f"unknown variant {kind!r}")


# --- evaluation ---------------------------------------------------------------------------

def evaluate(rule: Mapping[str, Any], context: Mapping[str, Any], statuses: Mapping[str, str]) -> bool:
    """Decide `rule` on a context and the tasks' statuses ("Completed", "Failed", "Skipped", ...)."""
    kind = rule.get("type")
    if kind == "Always":
        return True
    if kind == "All":
        return all(evaluate(c, context, statuses) for c in rule.get("conditions", []))
    if kind == "Any":
        return any(evaluate(c, context, statuses) for c in rule.get("conditions", []))
    if kind == "None":
        return not any(evaluate(c, context, statuses) for c in rule.get("conditions", []))
    if kind in TASK_CONDITION_STATUS:
        name = rule["task_name"]  # a task id, or its full tenant::package::workflow::task name
        status = statuses.get(name, statuses.get(name.rsplit("::", 1)[-1]))
        return status == TASK_CONDITION_STATUS[kind]
    if kind == "ContextValue":
        return _context_condition(context, rule["key"], rule["operator"], rule.get("value"))
    raise TriggerRuleError(f"unknown trigger rule type {kind!r}")


_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values as serde_json has it: true != 1, and 1 != 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, float) and isinstance(b, float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        return False
    return type(a) is type(b) and a == b


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str) and isinstance(expected, str):
        return expected in actual
    if isinstance(actual, list):
        return any(json_equal(item, expected) for item in actual)
    return False


def _context_condition(context: Mapping[str, Any], key: str, operator: str, expected: Any) -> bool:
    actual = context.get(key, _MISSING)
    present = actual is not _MISSING
    if operator == "Exists":
        return present
    if operator == "NotExists":
        return not present
    if operator == "Equals":
        return present and json_equal(actual, expected)
    if operator == "NotEquals":
        return not (present and json_equal(actual, expected))
    if operator == "Contains":
        return present and _contains(actual, expected)
    if operator == "NotContains":
        return not (present and _contains(actual, expected))
    if not (present and _is_number(actual) and _is_number(expected)):
        return False
    if operator == "GreaterThan":
        return float(actual) > float(expected)
    if operator == "LessThan":
        return float(actual) < float(expected)
    if operator == "GreaterThanOrEqual":
        return float(actual) >= float(expected)
    if operator == "LessThanOrEqual":
        return float(actual) <= float(expected)
    raise TriggerRuleError(f"unknown operator {operator!r}")
