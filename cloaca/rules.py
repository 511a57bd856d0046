"""Trigger rules: data that decides, from the context, whether a task runs.

Rules are plain data (they serialise to JSON) so the engine that evaluates
them can live in another process from the code that declared them.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Union

OPERATORS = (
    "Equals",
    "NotEquals",
    "GreaterThan",
    "LessThan",
    "GreaterThanOrEqual",
    "LessThanOrEqual",
    "Contains",
    "NotContains",
    "Exists",
    "NotExists",
)
_BY_FOLDED = {name.lower(): name for name in OPERATORS}
_BY_FOLDED.update({"==": "Equals", "!=": "NotEquals", ">": "GreaterThan", "<": "LessThan",
                   ">=": "GreaterThanOrEqual", "<=": "LessThanOrEqual"})
_UNARY = {"Exists", "NotExists"}


class TriggerRuleError(ValueError):
    """A trigger rule that is malformed."""


class Rule:
    """Base of every trigger rule."""

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class ContextValue(Rule):
    def __init__(self, key: str, operator: str, value: Any = None) -> None:
        canonical = _BY_FOLDED.get(str(operator).replace("_", "").lower())
        if canonical is None:
            raise TriggerRuleError(
                f"unknown trigger rule operator {operator!r}; expected one of {', '.join(OPERATORS)}"
            )
        if not isinstance(key, str) or not key:
            raise TriggerRuleError(f"a context_value rule needs a non-empty string key, got {key!r}")
        self.key = key
        self.operator = canonical
        self.value = value

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "context_value", "key": self.key, "operator": self.operator}
        if self.operator not in _UNARY:
            data["value"] = self.value
        return data

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        present = self.key in context
        if self.operator == "Exists":
            return present
        if self.operator == "NotExists":
            return not present
        if not present:
            # A comparison with a missing key is false, except "not equal / not contains".
            return self.operator in ("NotEquals", "NotContains")
        actual = context[self.key]
        op = self.operator
        if op == "Equals":
            return bool(actual == self.value)
        if op == "NotEquals":
            return bool(actual != self.value)
        if op in ("Contains", "NotContains"):
            try:
                found = self.value in actual
            except TypeError:
                found = False
            return found if op == "Contains" else not found
        try:
            if op == "GreaterThan":
                return bool(actual > self.value)
            if op == "LessThan":
                return bool(actual < self.value)
            if op == "GreaterThanOrEqual":
                return bool(actual >= self.value)
            return bool(actual <= self.value)
        except TypeError:
            # Comparing unlike types (a string with a number) is simply not satisfied.
            return False


class Combinator(Rule):
    kind = ""

    def __init__(self, *rules: "RuleLike") -> None:
        if len(rules) == 1 and isinstance(rules[0], (list, tuple)):
            rules = tuple(rules[0])
        self.rules = [to_rule(rule) for rule in rules]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "rules": [rule.to_dict() for rule in self.rules]}


class All(Combinator):
    kind = "all"

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return all(rule.evaluate(context) for rule in self.rules)


class Any_(Combinator):
    kind = "any"

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return any(rule.evaluate(context) for rule in self.rules)


class None_(Combinator):
    kind = "none"

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return not any(rule.evaluate(context) for rule in self.rules)


class Always(Rule):
    def to_dict(self) -> dict[str, Any]:
        return {"type": "always"}

    def evaluate(self, context: Mapping[str, Any]) -> bool:
        return True


RuleLike = Union[Rule, Mapping[str, Any], Iterable[Any]]
_COMBINATORS: dict[str, type[Combinator]] = {"all": All, "any": Any_, "none": None_}


def to_rule(rule: RuleLike | None) -> Rule:
    """Normalise what a task author may pass as `trigger_rules`.

    None means always run; a list means all of its rules; a dict is the
    JSON form produced by `Rule.to_dict()`.
    """
    if rule is None:
        return Always()
    if isinstance(rule, Rule):
        return rule
    if isinstance(rule, Mapping):
        kind = str(rule.get("type", "")).lower()
        if kind in _COMBINATORS:
            return _COMBINATORS[kind](*(rule.get("rules") or []))
        if kind == "context_value":
            return ContextValue(rule.get("key", ""), rule.get("operator", ""), rule.get("value"))
        if kind == "always":
            return Always()
        raise TriggerRuleError(f"unknown trigger rule type {rule.get('type')!r}")
    if isinstance(rule, (list, tuple)):
        return All(*rule)
    raise TriggerRuleError(f"a trigger rule must be a rule, a dict or a list, not {type(rule).__qualname__}")


def context_value(key: str, operator: str, value: Any = None) -> ContextValue:
    """A rule on one context key: `context_value("mode", "Equals", "full")`."""
    return ContextValue(key, operator, value)


def all_of(*rules: RuleLike) -> All:
    return All(*rules)


def any_of(*rules: RuleLike) -> Any_:
    return Any_(*rules)


def none_of(*rules: RuleLike) -> None_:
    return None_(*rules)
