"""The authoring API as the engine's contract (§1.1–§1.12 of the cloaca reference) describes it.

Each test names the behaviour it pins. Engine semantics of whole runs are in
test_engine_semantics.py; secrets in test_secrets.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

import cloaca
from cloaca.invoke import invoke_task
from cloaca.namespace import WorkflowContext, workflow_context
from cloaca.registry import REGISTRY
from cloaca.slots import SemaphoreSlot

pytestmark = pytest.mark.usefixtures("clean_registry")

CONTRACT = [
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
]
WHEEL_ONLY = ["DefaultRunner", "WorkflowResult", "DefaultRunnerConfig", "_shutdown_all_runners"]


def spec_of(task_id: str, workflow: str = "wf"):
    return REGISTRY.get_task(cloaca.TaskNamespace("public", "embedded", workflow, task_id))


# --- §1.1 the symbol set ------------------------------------------------------------------

@pytest.mark.parametrize("name", CONTRACT + WHEEL_ONLY)
def test_every_contract_name_is_importable_locally(name):
    assert getattr(cloaca, name) is not None
    exec(f"from cloaca import {name}", {})


# --- §1.2 @cloaca.task --------------------------------------------------------------------

def test_task_returns_the_function_unchanged_and_registers_it_under_the_builder_namespace():
    def extract(context):
        return "called directly"

    with cloaca.WorkflowBuilder("wf"):
        decorated = cloaca.task(id="fetch-data")(extract)
    assert decorated is extract and extract(None) == "called directly"
    spec = spec_of("fetch-data")
    assert spec.function is extract and str(spec.namespace) == "public::embedded::wf::fetch-data"


def test_task_id_defaults_to_the_function_name_and_function_dependencies_resolve_to_their_name():
    with workflow_context(WorkflowContext("public", "embedded", "wf")):
        @cloaca.task()
        def first(context):
            return None

        @cloaca.task(id="renamed")
        def original_name(context):
            return None

        @cloaca.task(dependencies=[first, original_name, "first"])
        def second(context):
            return None

    # The quirk: a function reference is its __name__, not its task id...
    assert spec_of("second").dependencies == ["first", "original_name", "first"]
    assert spec_of("first") is not None and spec_of("renamed") is not None
    # ... so inside a builder the workflow does not validate.
    with pytest.raises(ValueError, match="task 'second' depends on 'original_name' which is not registered"):
        with cloaca.WorkflowBuilder("quirk"):
            cloaca.task(id="renamed")(original_name)
            cloaca.task(dependencies=[original_name])(second)


def test_task_outside_any_workflow_context_is_the_engines_value_error():
    with pytest.raises(ValueError, match=r"^No workflow context available\. Tasks must be defined within a "
                                         r"WorkflowBuilder context manager\.$"):
        cloaca.task()(lambda context: None)


def test_task_on_another_thread_than_the_open_context_says_so():
    caught: list[BaseException] = []

    def decorate() -> None:
        try:
            cloaca.task(id="from_thread")(lambda context: None)
        except ValueError as exc:
            caught.append(exc)

    with workflow_context(WorkflowContext("public", "embedded", "wf")):
        thread = threading.Thread(target=decorate)
        thread.start()
        thread.join()
    assert str(caught[0]).startswith("No workflow context on this thread, but one is active on a DIFFERENT thread.")


def test_bad_dependency_names_its_index():
    with workflow_context(WorkflowContext("public", "embedded", "wf")), \
            pytest.raises(ValueError, match=r"^Dependency 1 must be either a string or a function object with "
                                            r"__name__ attribute$"):
        cloaca.task(dependencies=["ok", 42])(lambda context: None)


def test_retry_object_and_retry_keywords_are_exclusive():
    with pytest.raises(ValueError, match=r"cannot be combined with the retry_\* keyword arguments "
                                         r"\(got: retry_attempts, retry_jitter\)"):
        cloaca.task(retry=cloaca.RetryPolicy.default(), retry_attempts=2, retry_jitter=False)


def test_no_retry_arguments_give_the_default_policy():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task()
        def plain(context):
            return None

    policy = spec_of("plain").retry
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay, policy.with_jitter) == (3, 1.0, 60.0, True)
    assert repr(policy.backoff_strategy) == "BackoffStrategy.Exponential(base=2, multiplier=1)"
    assert [repr(c) for c in policy.retry_conditions] == ["RetryCondition.AllErrors"]


def test_retry_keywords_map_onto_the_policy_and_unknown_strings_fall_back_as_in_the_engine():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task(retry_attempts=5, retry_backoff="linear", retry_delay_ms=250, retry_max_delay_ms=900,
                     retry_condition="transient", retry_jitter=False)
        def tuned(context):
            return None

        with pytest.warns(RuntimeWarning) as warned:
            @cloaca.task(retry_backoff="exponentail", retry_condition="sometimes")
            def typo(context):
                return None
    assert ["unknown retry_backoff 'exponentail'" in str(w.message) for w in warned] == [True, False]
    assert "unknown retry_condition 'sometimes'" in str(warned[1].message)

    tuned_policy = spec_of("tuned").retry
    assert (tuned_policy.max_attempts, tuned_policy.initial_delay, tuned_policy.max_delay) == (5, 0.25, 0.9)
    assert [tuned_policy.calculate_delay(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 0.75, 0.9]  # linear, then capped
    assert repr(spec_of("typo").retry.backoff_strategy) == "BackoffStrategy.Fixed"
    assert [repr(c) for c in spec_of("typo").retry.retry_conditions] == ["RetryCondition.AllErrors"]


def test_handle_is_detected_by_the_second_parameters_name():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.task()
        def with_handle(context, handle):
            return None

        @cloaca.task()
        def with_task_handle(context, task_handle):
            return None

        @cloaca.task()
        def other_name(context, helper=None):
            return None

    assert spec_of("with_handle").requires_handle and spec_of("with_task_handle").requires_handle
    assert not spec_of("other_name").requires_handle


def test_redeclaring_a_task_id_replaces_it():
    with cloaca.WorkflowBuilder("wf"):
        cloaca.task(id="same")(lambda context: None)

        @cloaca.task(id="same")
        def newer(context):
            return None

    assert spec_of("same").function is newer
    assert list(REGISTRY.workflow("wf").task_specs) == ["same"]


def test_post_invocation_without_invokes_is_refused():
    with workflow_context(WorkflowContext("public", "embedded", "wf")), \
            pytest.raises(ValueError, match="`post_invocation` requires `invokes=...`"):
        cloaca.task(post_invocation=lambda context: context)(lambda context: None)


# --- §1.3 the task contract ------------------------------------------------------------------

def _spec(function, **task_args):
    with workflow_context(WorkflowContext("public", "embedded", "contract")):
        cloaca.task(id=function.__name__, **task_args)(function)
    return REGISTRY.get_task(cloaca.TaskNamespace("public", "embedded", "contract", function.__name__))


def test_returning_none_keeps_the_input_and_drops_in_place_changes():
    def mutate_then_none(context):
        context.set("added", True)
        context.remove("kept")

    assert invoke_task(_spec(mutate_then_none), {"kept": 1}) == {"kept": 1}


def test_returning_the_context_makes_it_the_output_and_the_input_is_a_copy():
    given = {"items": [1]}

    def append(context):
        items = context.get("items")
        items.append(2)  # a copy: no effect until set
        context.set("seen", items)
        return context

    assert invoke_task(_spec(append), given) == {"items": [1], "seen": [1, 2]}
    assert given == {"items": [1]}


def test_returning_a_dict_is_our_superset_and_anything_else_fails():
    def as_dict(context):
        return {"x": 1}

    def as_int(context):
        return 3

    assert invoke_task(_spec(as_dict), {}) == {"x": 1}
    with pytest.raises(cloaca.InvalidTaskResult, match="not int"):
        invoke_task(_spec(as_int), {})


def test_async_tasks_are_awaited_our_superset():
    async def later(context):
        await asyncio.sleep(0)
        context.set("async", True)
        return context

    assert invoke_task(_spec(later), {}) == {"async": True}


def test_exceptions_propagate_and_on_failure_gets_the_engines_message_and_the_input_context(capsys):
    calls = []

    class LookupFailed(Exception):
        pass

    def failing(context):
        context.set("touched", True)
        raise LookupFailed("connection refused")

    def on_failure(task_id, error, context):
        calls.append((task_id, error, context.to_dict()))

    with pytest.raises(LookupFailed):
        invoke_task(_spec(failing, on_failure=on_failure), {"a": 1})
    assert calls == [("failing", "Python task execution failed: LookupFailed: connection refused",
                      {"a": 1, "touched": True})]


def test_on_success_gets_the_output_and_callback_errors_are_printed_and_swallowed(capsys):
    seen = []

    def ok(context):
        context.set("done", True)
        return context

    def broken_callback(task_id, context):
        seen.append((task_id, context.to_dict()))
        raise RuntimeError("callback bug")

    assert invoke_task(_spec(ok, on_success=broken_callback), {}) == {"done": True}
    assert seen == [("ok", {"done": True})]
    assert "[cloaca] on_success callback failed for task 'ok': RuntimeError: callback bug" in capsys.readouterr().err


def test_handle_is_injected_and_consumed_after_the_task():
    kept = []

    def uses_handle(context, handle):
        kept.append(handle)
        context.set("held", handle.is_slot_held())
        return context

    assert invoke_task(_spec(uses_handle), {}) == {"held": True}
    with pytest.raises(ValueError, match="^TaskHandle has already been consumed$"):
        kept[0].is_slot_held()
    with pytest.raises(ValueError, match="^TaskHandle has already been consumed$"):
        kept[0].defer_until(lambda: True)


# --- §1.9 TaskHandle.defer_until -------------------------------------------------------------

def test_defer_until_releases_the_slot_polls_and_takes_it_back(capsys):
    semaphore = threading.Semaphore(1)
    slot = SemaphoreSlot(semaphore)
    assert slot.acquire()
    polls = []
    ready_at = time.monotonic() + 0.3

    def condition():
        polls.append(semaphore.acquire(blocking=False) and (semaphore.release() or True))  # free while deferred?
        if len(polls) == 2:
            raise RuntimeError("flaky probe")
        return time.monotonic() >= ready_at

    def deferring(context, handle):
        handle.defer_until(condition, poll_interval_ms=50)
        context.set("held_after", handle.is_slot_held())
        return context

    assert invoke_task(_spec(deferring), {}, slot=slot) == {"held_after": True}
    assert len(polls) >= 3 and all(polls[:1])  # polled several times, the slot free meanwhile
    assert slot.held and not semaphore.acquire(blocking=False)  # taken back
    assert "[cloaca] defer_until condition error: RuntimeError: flaky probe" in capsys.readouterr().err


def test_defer_until_without_a_slot_provider_still_waits():
    flag = threading.Event()
    threading.Timer(0.1, flag.set).start()

    def waits(context, handle):
        handle.defer_until(flag.is_set, poll_interval_ms=20)
        return None

    assert invoke_task(_spec(waits), {"x": 1}) == {"x": 1}


# --- §1.4 Context ---------------------------------------------------------------------------

def test_context_get_returns_copies_and_defaults():
    context = cloaca.Context({"d": {"x": 1}, "nothing": None})
    value = context.get("d")
    value["x"] = 2
    assert context.get("d") == {"x": 1}
    assert context.get("missing", "dflt") == "dflt" and context.get("missing") is None
    assert context.get("nothing", "dflt") is None  # a stored null is not absent


def test_context_insert_update_remove_errors_are_the_engines():
    context = cloaca.Context({"a": 1})
    with pytest.raises(ValueError, match="^Key already exists: Key already exists: a$"):
        context.insert("a", 2)
    with pytest.raises(KeyError) as missing:
        context.update("zzz", 3)
    assert missing.value.args[0] == "Key not found: Key not found: zzz"
    assert context.remove("zzz") is None and context.remove("a") == 1 and len(context) == 0
    assert not hasattr(context, "delete") and not hasattr(context, "contains")


def test_context_item_access():
    context = cloaca.Context({"a": 1, "n": None})
    context["b"] = [1]
    assert context["a"] == 1 and "b" in context and "n" in context
    for key in ("missing", "n"):  # a null value reads as missing, as in the engine
        with pytest.raises(KeyError) as caught:
            context[key]
        assert caught.value.args[0] == f"Key not found: '{key}'"
    del context["b"]
    with pytest.raises(KeyError):
        del context["b"]


def test_context_update_from_dict_json_round_trip_and_repr():
    context = cloaca.Context()
    context.update_from_dict({"a": 1, "t": (1, 2)})  # tuples become lists, as pythonize converts them
    assert context.to_dict() == {"a": 1, "t": [1, 2]}
    assert context.to_json() == '{"a":1,"t":[1,2]}'
    assert repr(context) == 'Context({"a":1,"t":[1,2]})'
    assert cloaca.Context.from_json('{"b": true}').to_dict() == {"b": True}
    snapshot = context.to_dict()
    snapshot["a"] = 99
    assert context.get("a") == 1


@pytest.mark.parametrize("value, type_name", [({1, 2}, "set"), (b"x", "bytes"), (object(), "object"),
                                              (float("nan"), "float")])
def test_context_refuses_values_json_cannot_carry_with_a_type_error_naming_the_key(value, type_name):
    context = cloaca.Context()
    with pytest.raises(TypeError) as caught:
        context.set("bad_key", value)
    assert isinstance(caught.value, cloaca.NotJSONError)
    assert "'bad_key'" in str(caught.value) and type_name in str(caught.value) and "bad_key" not in context
    with pytest.raises(TypeError):
        cloaca.Context({"k": {1: "non-string key"}})


# --- §1.5 WorkflowBuilder, Workflow, register_workflow_constructor ---------------------------------

def test_builder_methods_return_none_and_exit_registers_every_task_of_its_namespace():
    with cloaca.WorkflowBuilder("pipeline") as builder:
        assert builder.description("ETL") is None and builder.tag("team", "data") is None

        @cloaca.task(id="a")
        def a(context):
            return None

        @cloaca.task(id="b", dependencies=["a"])
        def b(context):
            return None

    workflow = REGISTRY.workflow("pipeline")
    assert (workflow.name, workflow.description, workflow.tags) == ("pipeline", "ETL", {"team": "data"})
    assert workflow.topological_sort() == ["public::embedded::pipeline::a", "public::embedded::pipeline::b"]
    assert workflow.get_roots() == ["public::embedded::pipeline::a"]
    assert workflow.get_leaves() == ["public::embedded::pipeline::b"]
    assert workflow.get_execution_levels() == [["public::embedded::pipeline::a"], ["public::embedded::pipeline::b"]]
    assert repr(workflow) == "Workflow(name='pipeline', tasks=2)" and len(workflow.version) >= 8


def test_builder_namespace_parts_can_be_overridden():
    with cloaca.WorkflowBuilder("shown", tenant="acme", package="pkg", workflow="wf_id"):
        cloaca.task(id="t")(lambda context: None)
    assert REGISTRY.workflow("wf_id").get_roots() == ["acme::pkg::wf_id::t"]


@pytest.mark.parametrize("body, message", [
    ("cloaca.task(id='x', dependencies=['ghost'])(lambda c: None)",
     "Workflow validation failed: Missing dependency: task 'x' depends on 'ghost' which is not registered"),
    ("cloaca.task(id='x', dependencies=['y'])(lambda c: None); cloaca.task(id='y', dependencies=['x'])(lambda c: None)",
     "Workflow validation failed: Circular dependency detected"),
    ("pass", "Workflow validation failed: Workflow cannot be empty"),
])
def test_builder_exit_validates(body, message):
    with pytest.raises(ValueError, match=message):
        with cloaca.WorkflowBuilder("broken"):
            exec(body, {"cloaca": cloaca})
    assert REGISTRY.workflow("broken") is None


def test_add_task_and_build():
    with cloaca.WorkflowBuilder("built") as builder:
        @cloaca.task(id="only")
        def only(context):
            return None

        with pytest.raises(ValueError, match=r"^Task 'ghost' not found in registry\. Make sure it was decorated "
                                             r"with @task\.$"):
            builder.add_task("ghost")
        with pytest.raises(ValueError, match="Task must be either a string task ID or a function object"):
            builder.add_task(42)
        with pytest.raises(ValueError, match="Failed to build workflow: .*Workflow cannot be empty"):
            builder.build()
        builder.add_task(only)
        workflow = builder.build()
    assert isinstance(workflow, cloaca.Workflow) and workflow.name == "built" and workflow.validate() is None


def test_register_workflow_constructor_calls_now_and_registers_under_the_name():
    calls = []

    def make():
        calls.append(1)
        builder = cloaca.WorkflowBuilder("made")
        with builder:
            cloaca.task(id="m")(lambda context: None)
        builder.add_task("m")
        return builder.build()

    cloaca.register_workflow_constructor("by_constructor", make)
    assert calls == [1] and REGISTRY.workflow("by_constructor").name == "made"
    with pytest.raises(ValueError, match="Failed to extract workflow from constructor"):
        cloaca.register_workflow_constructor("bad", lambda: "not a workflow")


def test_task_namespace_and_workflow_context_helpers():
    namespace = cloaca.TaskNamespace.from_string("t::p::w::task1")
    assert (namespace.tenant_id, namespace.package_name, namespace.workflow_id, namespace.task_id) == \
        ("t", "p", "w", "task1")
    assert str(namespace) == "t::p::w::task1" and repr(namespace) == "TaskNamespace('t', 'p', 'w', 'task1')"
    assert namespace.is_child_of(namespace.parent()) and not namespace.parent().is_child_of(namespace.parent())
    assert namespace.is_sibling_of(cloaca.TaskNamespace("t", "p", "w", "task2")) and not namespace.is_sibling_of(namespace)
    with pytest.raises(ValueError, match="Invalid namespace format"):
        cloaca.TaskNamespace.from_string("a::b::c")
    context = cloaca.WorkflowContext("t", "p", "w")
    assert context.task_namespace("task1") == namespace and str(context) == "t::p::w"


# --- §1.6 triggers ------------------------------------------------------------------------------

def test_trigger_needs_no_workflow_context_and_returns_the_function():
    def poll():
        return cloaca.TriggerResult.fire(cloaca.Context({"file": "a.csv"}))

    assert cloaca.trigger(name="watch", on="etl", poll_interval="500ms")(poll) is poll
    recorded = REGISTRY.triggers["watch"]
    assert (recorded.workflow, recorded.poll_interval, recorded.allow_concurrent) == ("etl", "500ms", False)
    assert cloaca.trigger(on="etl")(lambda: True) is not None  # poll interval defaults to 30s


@pytest.mark.parametrize("kwargs, message", [
    ({"cron": "*/3 * * * * *", "poll_interval": "5s", "on": "wf"}, "mutually exclusive"),
    ({"cron": "*/3 * * * * *"}, "requires `on=`"),
    ({"poll_interval": "5 seconds"}, "Invalid poll_interval"),
])
def test_trigger_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cloaca.trigger(**kwargs)


def test_trigger_result():
    assert repr(cloaca.TriggerResult.skip()) == "TriggerResult.Skip"
    fired = cloaca.TriggerResult.fire(cloaca.Context({"a": 1}))
    assert fired.is_fire_result() and not fired.is_skip_result()
    assert repr(fired) == 'TriggerResult.Fire(Context({"a":1}))'


# --- §1.7 trigger-rule helpers -------------------------------------------------------------------

def test_rule_helpers_return_the_engines_dicts():
    assert cloaca.context_value("mode", "==", "full") == {"type": "ContextValue", "key": "mode",
                                                          "operator": "Equals", "value": "full"}
    assert cloaca.context_value("n", "greater_than", 1)["operator"] == "GreaterThan"
    assert cloaca.task_success("a") == {"type": "TaskSuccess", "task_name": "a"}
    assert cloaca.task_failed("a") == {"type": "TaskFailed", "task_name": "a"}
    assert cloaca.task_skipped("a") == {"type": "TaskSkipped", "task_name": "a"}
    assert cloaca.all_of(cloaca.task_success("a")) == {"type": "All", "conditions": [{"type": "TaskSuccess",
                                                                                      "task_name": "a"}]}
    assert cloaca.any_of()["type"] == "Any" and cloaca.none_of()["type"] == "None"
    assert cloaca.always() == {"type": "Always"}
    with pytest.raises(ValueError, match="unknown operator 'Approximately'"):
        cloaca.context_value("a", "Approximately", 1)


def test_a_bare_condition_is_wrapped_in_all_and_a_bad_rule_is_refused_at_decoration():
    with cloaca.WorkflowBuilder("wf"):
        cloaca.task(id="gated", trigger_rules=cloaca.task_success("x"))(lambda context: None)
        with pytest.raises(ValueError, match="invalid trigger rule"):
            cloaca.task(id="bad", trigger_rules={"type": "Sometimes"})
    assert spec_of("gated").trigger_rule == {"type": "All", "conditions": [{"type": "TaskSuccess", "task_name": "x"}]}


# --- §1.8 retry value objects ---------------------------------------------------------------------

def test_retry_policy_builder_getters_and_repr():
    policy = (cloaca.RetryPolicy.builder().max_attempts(5).initial_delay(0.5).max_delay(30.0)
              .backoff_strategy(cloaca.BackoffStrategy.linear(1.5))
              .retry_condition(cloaca.RetryCondition.transient_only()).with_jitter(False).build())
    assert (policy.max_attempts, policy.initial_delay, policy.max_delay, policy.with_jitter) == (5, 0.5, 30.0, False)
    assert repr(policy) == "RetryPolicy(max_attempts=5, initial_delay=0.5s, max_delay=30s, jitter=false)"
    assert policy.should_retry(4, "any") and not policy.should_retry(5, "any")
    assert policy.calculate_delay(2) == 1.5  # linear: 0.5 * 2 * 1.5
    assert repr(cloaca.RetryCondition.never()) == "RetryCondition.Never"
    assert repr(cloaca.BackoffStrategy.fixed()) == "BackoffStrategy.Fixed"


def test_backoff_formulas_cap_and_jitter():
    exponential = cloaca.RetryPolicy.builder().initial_delay(1.0).max_delay(5.0).with_jitter(False).build()
    assert [exponential.calculate_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    fixed = cloaca.RetryPolicy.builder().backoff_strategy(cloaca.BackoffStrategy.fixed()).initial_delay(2.0) \
        .with_jitter(False).build()
    assert fixed.calculate_delay(3) == 2.0
    jittered = cloaca.RetryPolicy.builder().initial_delay(1.0).build()
    delays = {jittered.calculate_delay(1) for _ in range(200)}
    assert min(delays) >= 0.75 and max(delays) <= 1.25 and len(delays) > 10


def test_retry_conditions_decide_on_the_engines_message():
    pattern = cloaca.RetryPolicy.builder().retry_condition(cloaca.RetryCondition.error_pattern(["Quota"])).build()
    assert pattern.allows_retry(1, "Python task execution failed: RuntimeError: quota exceeded", False)
    assert not pattern.allows_retry(1, "Python task execution failed: RuntimeError: bad input", False)
    never = cloaca.RetryPolicy.builder().retry_condition(cloaca.RetryCondition.never()).build()
    assert not never.allows_retry(1, "anything", True)


# --- §1.10 variables, declaration-only decorators, constructors, graphs ----------------------------

def test_var_and_var_or(monkeypatch):
    monkeypatch.setenv("CLOACINA_VAR_DATA_SOURCE", "postgres://db")
    monkeypatch.delenv("CLOACINA_VAR_MISSING", raising=False)
    assert cloaca.var("DATA_SOURCE") == "postgres://db" and cloaca.var_or("MISSING", "30") == "30"
    with pytest.raises(KeyError) as caught:
        cloaca.var("MISSING")
    assert str(caught.value) == "required variable 'MISSING' not set (expected env var CLOACINA_VAR_MISSING)"


def test_declaration_decorators_return_the_object_and_record_on_the_task():
    with cloaca.WorkflowBuilder("wf"):
        @cloaca.workflow_params(batch_size=(int, 100), mode=str, ratio=0.5)
        @cloaca.workflow_secrets("warehouse")
        @cloaca.boundary_schema(inputs={"type": "object"})
        @cloaca.task(id="t")
        def t(context):
            return None

    assert t.__name__ == "t" and spec_of("t").function is t
    workflow = REGISTRY.workflow("wf")
    assert workflow.params == {"batch_size": {"type": "integer", "required": False, "default": 100},
                               "mode": {"type": "string", "required": True},
                               "ratio": {"type": "number", "required": False, "default": 0.5}}
    assert workflow.secrets == ["warehouse"]
    with pytest.raises(ValueError, match="has type"):
        cloaca.workflow_params(when=object)


def test_unsupported_features_are_importable_and_recorded_not_run():
    graph = cloaca.ComputationGraphBuilder("score_graph", graph={"score": {}})
    with graph:
        @cloaca.node
        def score(ctx):
            return {"score": 99}

    @cloaca.reactor(name="ticks", accumulators=["a"])
    class Ticks:
        pass

    @cloaca.passthrough_accumulator
    def a(event):
        return event

    with cloaca.WorkflowBuilder("wf"):
        cloaca.constructor("provider", "from", "ctor")
        cloaca.task(id="invoker", invokes=graph)(lambda context: None)
    features = [(use.feature, use.name) for use in REGISTRY.unsupported]
    assert ("computation graph", "score_graph") in features and ("reactor", "ticks") in features
    assert ("constructor", "provider") in features and ("computation graph", "invoker") in features
    assert score({}) == {"score": 99} and graph.NAME == "score_graph"
    with pytest.raises(ValueError, match="No workflow context"):
        cloaca.constructor("x", "from", "ctor")


def test_no_custom_exception_hierarchy_is_needed_to_catch_errors():
    # The engine raises builtin types; ours are subclasses of the same ones.
    assert issubclass(cloaca.NotJSONError, TypeError) and issubclass(cloaca.VariableNotFoundError, KeyError)
    assert issubclass(cloaca.WorkflowDefinitionError, ValueError) and issubclass(cloaca.TriggerRuleError, ValueError)
    assert json.loads(cloaca.Context({"a": 1}).to_json()) == {"a": 1}


def test_invoke_task_async_awaits_async_bodies_on_the_running_loop_and_runs_sync_ones():
    from cloaca.invoke import invoke_task_async

    loop_seen = []

    async def on_loop(context):
        loop_seen.append(asyncio.get_running_loop())
        context.set("async", True)
        return context

    def plain(context):
        return None

    async def main():
        first = await invoke_task_async(_spec(on_loop), {})
        second = await invoke_task_async(_spec(plain), {"kept": 1})
        return first, second, asyncio.get_running_loop()

    first, second, loop = asyncio.run(main())
    assert first == {"async": True} and second == {"kept": 1} and loop_seen == [loop]
