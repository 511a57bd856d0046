"""The authoring API as package code uses it: decorators, Context, vars, rules, runner."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

import cloaca
from cloaca.registry import REGISTRY

pytestmark = pytest.mark.usefixtures("clean_registry")


def test_task_defaults_and_stays_callable():
    @cloaca.task()
    def plain(context):
        return "called"

    @cloaca.task(id="later", dependencies=[plain])
    async def later(context):
        return None

    spec = plain.__cloaca_task__
    assert spec.id == "plain" and spec.dependencies == [] and not spec.is_async
    assert later.__cloaca_task__.dependencies == ["plain"] and later.__cloaca_task__.is_async
    assert plain(None) == "called"
    assert asyncio.iscoroutinefunction(later)


def test_bare_decorator_and_self_dependency_refused():
    @cloaca.task
    def bare(context):
        pass

    assert bare.__cloaca_task__.id == "bare"
    with pytest.raises(cloaca.WorkflowDefinitionError, match="cannot depend on itself"):
        cloaca.task(id="x", dependencies=["x"])(lambda c: c)
    with pytest.raises(cloaca.WorkflowDefinitionError, match="retry_backoff"):
        cloaca.task(retry_backoff="linear")


def test_builder_owns_its_tasks_and_default_workflow_is_the_module():
    with cloaca.WorkflowBuilder("wf") as builder:
        builder.description("does things")

        @cloaca.task(id="inside")
        def inside(context):
            pass

    @cloaca.task(id="outside")
    def outside(context):
        pass

    assert inside.__cloaca_task__.workflow == "wf"
    assert REGISTRY.workflows["wf"].description == "does things"
    assert outside.__cloaca_task__.workflow is None
    assert [spec.id for spec in REGISTRY.workflow_tasks(__name__)] == ["outside"]


def test_context_operations():
    context = cloaca.Context({"a": 1})
    context.set("a", 2)
    context.insert("b", [1, {"x": None}])
    context.update("b", "two")
    assert context.get("missing", "d") == "d"
    assert "a" in context and len(context) == 2 and sorted(context) == ["a", "b"]
    assert context["a"] == 2
    with pytest.raises(cloaca.ContextKeyError, match="already exists"):
        context.insert("a", 3)
    with pytest.raises(cloaca.ContextKeyError, match="does not exist"):
        context.update("zzz", 3)
    assert context.remove("a") == 2
    with pytest.raises(cloaca.ContextKeyError):
        context.remove("a")
    snapshot = context.to_dict()
    snapshot["b"] = "changed"
    assert context.get("b") == "two"


@pytest.mark.parametrize("value, type_name", [
    ({1, 2}, "set"), ((1, 2), "tuple"), (float("nan"), "float"), (object(), "object"), (b"x", "bytes"),
])
def test_context_refuses_non_json_values_naming_key_and_type(value, type_name):
    context = cloaca.Context()
    with pytest.raises(cloaca.NotJSONError) as caught:
        context.set("bad_key", value)
    assert "'bad_key'" in str(caught.value) and type_name in str(caught.value)
    assert "bad_key" not in context


def test_context_refuses_nested_non_json_naming_the_path():
    with pytest.raises(cloaca.NotJSONError, match=r"key 'outer' \(at outer.inner\[1\]\).*set"):
        cloaca.Context()["outer"] = {"inner": [1, {2}]}


def test_var_and_var_or(monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_DATA_SOURCE", "postgres://db")
    monkeypatch.delenv("CLOACINA_VAR_MISSING", raising=False)
    assert cloaca.var("DATA_SOURCE") == "postgres://db"
    assert cloaca.var_or("MISSING", "30") == "30"
    with pytest.raises(cloaca.VariableNotFoundError, match="CLOACINA_VAR_MISSING"):
        cloaca.var("MISSING")


@pytest.mark.parametrize("rule, expected", [
    (cloaca.context_value("n", "Equals", 3), True),
    (cloaca.context_value("n", "NotEquals", 3), False),
    (cloaca.context_value("n", "GreaterThan", 2), True),
    (cloaca.context_value("n", "LessThan", 2), False),
    (cloaca.context_value("n", "Exists"), True),
    (cloaca.context_value("gone", "NotExists"), True),
    (cloaca.context_value("gone", "GreaterThan", 1), False),
    (cloaca.context_value("s", "GreaterThan", 1), False),  # unlike types never match
    (cloaca.all_of(cloaca.context_value("n", "Exists"), cloaca.context_value("s", "Equals", "x")), True),
    (cloaca.any_of(cloaca.context_value("gone", "Exists"), cloaca.context_value("n", "Equals", 3)), True),
    (cloaca.none_of(cloaca.context_value("gone", "Exists")), True),
])
def test_trigger_rules(rule, expected):
    assert rule.evaluate({"n": 3, "s": "x"}) is expected


def test_trigger_rules_round_trip_as_data_and_refuse_unknown_operators():
    from cloaca.rules import to_rule

    rule = cloaca.any_of(cloaca.context_value("a", "equals", 1), cloaca.context_value("b", "Exists"))
    assert to_rule(rule.to_dict()) == rule
    with pytest.raises(cloaca.TriggerRuleError, match="unknown trigger rule operator"):
        cloaca.context_value("a", "Approximately", 1)


def test_trigger_is_recorded():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.trigger(name="poller", poll_interval="5s")
        def poller():
            return None

    assert REGISTRY.triggers["poller"].workflow == "wf"
    assert REGISTRY.triggers["poller"].options == {"poll_interval": "5s"}


def _runner_result(workflow="wf", context=None, url=":memory:"):
    runner = cloaca.DefaultRunner(url)
    try:
        return runner.execute(workflow, cloaca.Context(context or {}))
    finally:
        runner.shutdown()


def test_runner_runs_dag_in_order_with_async_tasks_and_both_status_spellings():
    seen = []
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="a")
        def a(context):
            seen.append("a")
            context.set("a", 1)

        @cloaca.task(id="b", dependencies=["a"])
        async def b(context):
            await asyncio.sleep(0)
            seen.append("b")
            return {**context.to_dict(), "b": context.get("a") + 1}

        @cloaca.task(id="c", dependencies=["a"])
        def c(context):
            seen.append("c")
            context.set("c", 10)
            return context

        @cloaca.task(id="d", dependencies=["b", "c"])
        def d(context):
            seen.append("d")
            context.set("sum", context.get("b") + context.get("c"))
            return context

    result = _runner_result(context={"start": True})
    assert result.status == "completed" and result.status == "Completed"
    assert result.final_context.to_dict() == {"start": True, "a": 1, "b": 2, "c": 10, "sum": 12}
    assert seen[0] == "a" and seen[-1] == "d"
    assert all(outcome.status == "completed" and outcome.attempts == 1 for outcome in result.tasks.values())


def test_runner_retries_then_succeeds_and_reports_attempts():
    calls = {"n": 0}
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="flaky", retry_attempts=3, retry_backoff="exponential", retry_delay_ms=1)
        def flaky(context):
            calls["n"] += 1
            if calls["n"] < 3:
                raise ConnectionError("try again")

    result = _runner_result()
    assert result.status == "completed"
    assert result.tasks["flaky"].attempts == 3


def test_runner_failure_carries_traceback_with_cause_and_skips_dependents():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="boom", retry_attempts=1, retry_delay_ms=1)
        def boom(context):
            try:
                {}["missing"]
            except KeyError as exc:
                raise ValueError("could not process") from exc

        @cloaca.task(id="after", dependencies=["boom"])
        def after(context):
            raise AssertionError("must not run")

        @cloaca.task(id="independent")
        def independent(context):
            context.set("ok", True)

    result = _runner_result()
    assert result.status == "failed" and result.status == "Failed"
    failed = result.tasks["boom"]
    assert failed.status == "failed" and failed.attempts == 2
    assert failed.error.type == "ValueError" and failed.error.message == "could not process"
    assert "KeyError" in failed.error.traceback and "direct cause" in failed.error.traceback
    assert any(frame.function == "boom" for frame in failed.error.frames)
    assert result.tasks["after"].status == "skipped"
    assert result.tasks["independent"].status == "completed"
    assert result.final_context.get("ok") is True
    assert result.error is failed.error


def test_skipped_dependency_counts_as_resolved():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="gate", trigger_rules=cloaca.context_value("mode", "Equals", "full"))
        def gate(context):
            context.set("gated", True)

        @cloaca.task(id="after", dependencies=["gate"])
        def after(context):
            context.set("after", True)

    result = _runner_result(context={"mode": "quick"})
    assert result.status == "completed"
    assert result.tasks["gate"].status == "skipped"
    assert result.final_context.to_dict() == {"mode": "quick", "after": True}
    assert _runner_result(context={"mode": "full"}).final_context.get("gated") is True


def test_task_returning_non_json_or_wrong_type_fails_with_the_key():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="returns_set")
        def returns_set(context):
            return {"items": {1, 2}}

    result = _runner_result()
    assert result.status == "failed"
    assert result.tasks["returns_set"].error.type == "cloaca.NotJSONError"
    assert "'items'" in result.tasks["returns_set"].error.message


def test_runner_records_executions_in_sqlite(tmp_path):
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(id="only")
        def only(context):
            context.set("x", 1)

    database = tmp_path / "runs.db"
    assert _runner_result(url=f"sqlite:///{database}").status == "completed"
    rows = sqlite3.connect(database).execute("SELECT workflow, status, final_context FROM executions").fetchall()
    assert rows == [("wf", "completed", '{"x": 1}')]


def test_runner_refuses_unknown_workflow_and_bad_url():
    with pytest.raises(cloaca.WorkflowNotFoundError, match="no workflow named 'nope'"):
        _runner_result("nope")
    with pytest.raises(ValueError, match="unsupported database URL"):
        cloaca.DefaultRunner("postgres://x")
