"""Whole runs under DefaultRunner, pinned to the engine's semantics (§1.11 and §1.13 of the cloaca reference)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

import cloaca
from cloaca.engine import TaskNode, run_workflow
from cloaca.errors import TaskError, TaskFailed
from cloaca.registry import REGISTRY
from cloaca.retry import RetryPolicy

pytestmark = pytest.mark.usefixtures("clean_registry")
NO_RETRY = {"retry_attempts": 1}
QUICK = {"retry_delay_ms": 1, "retry_jitter": False}


def run(workflow: str, context: dict | None = None, config: cloaca.DefaultRunnerConfig | None = None,
        url: str = "sqlite://:memory:") -> cloaca.WorkflowResult:
    runner = cloaca.DefaultRunner.with_config(url, config or cloaca.DefaultRunnerConfig())
    try:
        return runner.execute(workflow, cloaca.Context(context or {}))
    finally:
        runner.shutdown()


def appender(name: str):
    def append(context):
        order = context.get("execution_order", [])
        order.append(name)
        context.set("execution_order", order)
        return context

    append.__name__ = name
    return append


def test_a_diamonds_fan_in_sees_both_branches_appends():
    with cloaca.WorkflowBuilder("diamond"):
        cloaca.task(id="start")(appender("start"))
        cloaca.task(id="left", dependencies=["start"])(appender("left"))
        cloaca.task(id="right", dependencies=["start"])(appender("right"))
        cloaca.task(id="join", dependencies=["left", "right"])(appender("join"))

    result = run("diamond")
    assert result.status == "Completed" and result.error_message is None
    order = result.final_context.get("execution_order")
    assert order[0] == "start" and order[-1] == "join" and sorted(order[1:3]) == ["left", "right"]


def test_dependency_outputs_merge_objects_recursively_and_primitives_latest_wins():
    with cloaca.WorkflowBuilder("merge"):
        @cloaca.task(id="a")
        def a(context):
            context.set("config", {"db": {"host": "a"}, "only_a": 1})
            context.set("items", [1, 2])
            return context

        @cloaca.task(id="b")
        def b(context):
            context.set("config", {"db": {"port": 5432}})
            context.set("items", [2, 3])
            return context

        @cloaca.task(id="both", dependencies=["a", "b"])
        def both(context):
            return context

    final = run("merge").final_context.to_dict()
    assert final["config"] == {"db": {"host": "a", "port": 5432}, "only_a": 1}
    assert sorted(final["items"]) == [1, 2, 3]


def test_a_task_runs_after_its_dependency_failed_and_the_run_fails_with_the_engines_message():
    with cloaca.WorkflowBuilder("after_failure"):
        @cloaca.task(id="boom", **NO_RETRY)
        def boom(context):
            raise ValueError("could not process")

        @cloaca.task(id="cleanup", dependencies=["boom"])
        def cleanup(context):
            context.set("cleaned", True)
            return context

    result = run("after_failure", {"seed": 1})
    assert result.status == "Failed" and result.error_message == "1 task(s) failed, 1 completed, 0 skipped"
    assert result.tasks["cleanup"].status == "Completed"
    # A failed dependency contributes no output: cleanup started from an empty context.
    assert result.final_context.to_dict() == {"cleaned": True}
    assert result.error.type == "ValueError" and result.error.message == "could not process"


def test_task_status_conditions_gate_on_what_happened_upstream():
    with cloaca.WorkflowBuilder("statuses"):
        @cloaca.task(id="risky", **NO_RETRY)
        def risky(context):
            if context.get("fail"):
                raise RuntimeError("no")
            return context

        @cloaca.task(id="on_success", dependencies=["risky"], trigger_rules=cloaca.task_success("risky"))
        def on_success(context):
            return context

        @cloaca.task(id="on_failure", dependencies=["risky"], trigger_rules=cloaca.task_failed("risky"))
        def on_failure(context):
            context.set("alerted", True)
            return context

        @cloaca.task(id="after_skip", dependencies=["on_success"], trigger_rules=cloaca.task_skipped("on_success"))
        def after_skip(context):
            context.set("noticed_skip", True)
            return context

        @cloaca.task(id="always", dependencies=["on_failure", "after_skip"], trigger_rules=cloaca.always())
        def always(context):
            context.set("always_ran", True)
            return context

    good = run("statuses", {"fail": False})
    assert {t: str.__str__(o.status) for t, o in good.tasks.items()} == {
        "risky": "Completed", "on_success": "Completed", "on_failure": "Skipped", "after_skip": "Skipped",
        "always": "Completed"}
    assert good.tasks["on_failure"].skip_reason == "Trigger rules not satisfied"
    bad = run("statuses", {"fail": True})
    assert {t: str.__str__(o.status) for t, o in bad.tasks.items()} == {
        "risky": "Failed", "on_success": "Skipped", "on_failure": "Completed", "after_skip": "Completed",
        "always": "Completed"}
    assert bad.final_context.to_dict() == {"alerted": True, "noticed_skip": True, "always_ran": True}
    assert bad.error_message == "1 task(s) failed, 3 completed, 1 skipped"


def test_context_value_rules_read_the_dependency_merged_context_and_skips_do_not_fail_the_run():
    with cloaca.WorkflowBuilder("gated"):
        @cloaca.task(id="size")
        def size(context):
            context.set("rows", len(context.get("input", [])))
            return context

        @cloaca.task(id="big_only", dependencies=["size"],
                     trigger_rules=cloaca.all_of(cloaca.context_value("rows", ">", 2),
                                                 cloaca.context_value("tags", "contains", "x")))
        def big_only(context):
            context.set("big", True)
            return context

    small = run("gated", {"input": [1], "tags": ["x"]})
    assert small.status == "Completed" and small.tasks["big_only"].status == "Skipped"
    assert small.final_context.get("rows") == 1  # the last task that completed: size
    assert run("gated", {"input": [1, 2, 3], "tags": ["x"]}).final_context.get("big") is True


def test_final_context_is_the_last_completed_tasks_output_not_a_merge_of_leaves():
    gate = threading.Event()
    with cloaca.WorkflowBuilder("leaves"):
        @cloaca.task(id="early")
        def early(context):
            context.set("early", True)
            gate.set()
            return context

        @cloaca.task(id="late")
        def late(context):
            gate.wait(30)
            context.set("late", True)
            return context

    assert run("leaves").final_context.to_dict() == {"late": True}


def test_default_policy_retries_twice_and_module_state_persists_across_retries():
    attempts = {"n": 0}  # module-level state in a real package; one interpreter keeps it
    with cloaca.WorkflowBuilder("flaky"):
        @cloaca.task(id="flaky", retry_delay_ms=1)
        def flaky(context):
            attempts["n"] += 1
            if attempts["n"] < 3:
                raise ConnectionError("try again")
            context.set("attempts", attempts["n"])
            return context

    result = run("flaky")
    assert result.status == "Completed" and result.tasks["flaky"].attempts == 3
    assert result.final_context.get("attempts") == 3


def test_transient_only_retries_transient_messages_only():
    counts = {"transient": 0, "permanent": 0}
    with cloaca.WorkflowBuilder("transient"):
        @cloaca.task(id="transient", retry_condition="transient", **QUICK)
        def transient(context):
            counts["transient"] += 1
            raise RuntimeError("connection refused")

        @cloaca.task(id="permanent", retry_condition="transient", **QUICK)
        def permanent(context):
            counts["permanent"] += 1
            raise RuntimeError("bad input")

    result = run("transient")
    assert counts == {"transient": 3, "permanent": 1}
    assert result.tasks["transient"].attempts == 3 and result.tasks["permanent"].attempts == 1


def test_on_failure_runs_on_every_failed_attempt():
    seen = []
    with cloaca.WorkflowBuilder("callbacks"):
        @cloaca.task(id="fails", retry_attempts=2, on_failure=lambda task_id, error, ctx: seen.append(error), **QUICK)
        def fails(context):
            raise KeyError("nope")

    assert run("callbacks").status == "Failed"
    assert seen == ["Python task execution failed: KeyError: 'nope'"] * 2


def test_workflow_params_bind_defaults_as_top_level_keys_and_required_ones_must_be_given():
    with cloaca.WorkflowBuilder("params"):
        @cloaca.workflow_params(batch_size=(int, 100), label=str)
        @cloaca.task(id="use")
        def use(context):
            context.set("seen", [context.get("batch_size"), context.get("label")])
            return context

    assert run("params", {"label": "x"}).final_context.get("seen") == [100, "x"]
    assert run("params", {"label": "x", "batch_size": 5}).final_context.get("seen") == [5, "x"]
    with pytest.raises(ValueError, match="Workflow execution failed: required param 'label'"):
        run("params")


def test_deferred_task_frees_its_slot_for_another_with_one_slot():
    released = threading.Event()
    with cloaca.WorkflowBuilder("defer"):
        @cloaca.task(id="waiter")
        def waiter(context, handle):
            handle.defer_until(released.is_set, poll_interval_ms=20)
            context.set("waited", True)
            return context

        @cloaca.task(id="releaser")
        def releaser(context):
            released.set()  # can only run if the waiter gave its only slot back
            return context

        @cloaca.task(id="end", dependencies=["waiter", "releaser"])
        def end(context):
            return context

    result = run("defer", config=cloaca.DefaultRunnerConfig(max_concurrent_tasks=1, task_timeout_seconds=60))
    assert result.status == "Completed" and result.final_context.get("waited") is True


def test_task_timeout_fails_the_attempt_as_transient():
    stop = threading.Event()
    with cloaca.WorkflowBuilder("slow"):
        @cloaca.task(id="stuck", retry_attempts=1)
        def stuck(context):
            stop.wait(30)
            return context

    try:
        result = run("slow", config=cloaca.DefaultRunnerConfig(task_timeout_seconds=1))
    finally:
        stop.set()
    assert result.status == "Failed" and result.tasks["stuck"].error.kind == "timeout"


def test_runner_config_defaults_and_result_fields(tmp_path):
    config = cloaca.DefaultRunnerConfig.default()
    assert config.to_dict() == {
        "max_concurrent_tasks": 4, "scheduler_poll_interval_ms": 100, "task_timeout_seconds": 300,
        "workflow_timeout_seconds": None, "db_pool_size": 10, "enable_recovery": True,
        "enable_cron_scheduling": True, "cron_poll_interval_seconds": 30,
        "cron_max_catchup_executions": 2**64 - 1, "cron_enable_recovery": True,
        "cron_recovery_interval_seconds": 300, "cron_lost_threshold_minutes": 10,
        "cron_max_recovery_age_seconds": 86400, "cron_max_recovery_attempts": 3}
    config.max_concurrent_tasks = 8
    assert config.max_concurrent_tasks == 8 and cloaca.DefaultRunnerConfig(task_timeout_seconds=5).task_timeout_seconds == 5
    with pytest.raises(ValueError, match="Invalid configuration"):
        cloaca.DefaultRunnerConfig(max_concurrent_tasks=0)

    with cloaca.WorkflowBuilder("fields"):
        cloaca.task(id="one")(lambda context: context)
    database = tmp_path / "runs.db"
    result = run("fields", {"x": 1}, url=f"sqlite://{database}")
    assert str.__str__(result.status) == "Completed" and result.status == "completed"
    assert result.start_time.endswith("+00:00") and result.end_time >= result.start_time
    assert result.error_message is None and isinstance(result.final_context, cloaca.Context)
    assert repr(result) == "WorkflowResult(status=Completed, error=None)"
    rows = sqlite3.connect(database).execute("SELECT workflow, status, final_context FROM executions").fetchall()
    assert rows == [("fields", "completed", '{"x":1}')]


def test_runner_rejections_are_the_engines_exception_types():
    with pytest.raises(ValueError, match="^Workflow execution failed: no workflow named 'nope'"):
        run("nope")
    with pytest.raises(RuntimeError, match="PostgreSQL"):
        cloaca.DefaultRunner("postgresql://user@host/db")
    with pytest.raises(ValueError, match="Invalid schema name"):
        cloaca.DefaultRunner.with_schema("postgresql://x", "bad-schema!")
    with cloaca.WorkflowBuilder("uses_constructor"):
        cloaca.task(id="t")(lambda context: context)
        cloaca.constructor("provider", "from", "ctor")
    with pytest.raises(ValueError, match="uses features this host does not run: cloaca.constructor"):
        run("uses_constructor")
    with cloaca.DefaultRunner() as runner:
        pass
    with pytest.raises(ValueError, match="shut down"):
        runner.execute("anything", cloaca.Context())


def test_the_engine_runs_any_executor_and_retries_retryable_failures_only():
    calls: list[str] = []

    def execute(task_id: str, data: dict) -> dict:
        calls.append(task_id)
        if task_id == "fatal":
            raise TaskFailed(TaskError("crashed", "SandboxCrashed", "segfault"), retryable=False)
        return {**data, task_id: True}

    quick = RetryPolicy(max_attempts=3, initial_delay_ms=1, jitter=False)
    result = run_workflow("w", [TaskNode("ok", retry=quick), TaskNode("fatal", retry=quick),
                                TaskNode("after", ("ok", "fatal"), quick)], {"in": 1}, execute)
    assert calls.count("fatal") == 1 and result.tasks["after"].status == "Completed"
    assert result.final_context.to_dict() == {"in": 1, "ok": True, "after": True}
    assert REGISTRY.workflows == {}


def test_workflow_timeout_fails_the_run_and_starts_nothing_more():
    stop = threading.Event()
    with cloaca.WorkflowBuilder("too_long"):
        @cloaca.task(id="stuck", retry_attempts=1)
        def stuck(context):
            stop.wait(30)
            return context

        @cloaca.task(id="after", dependencies=["stuck"])
        def after(context):
            return context

    try:
        result = run("too_long", config=cloaca.DefaultRunnerConfig(workflow_timeout_seconds=1))
    finally:
        stop.set()
    assert result.status == "Failed" and result.error_message.startswith("workflow timed out after 1s")
    assert result.tasks["stuck"].status == "Failed" and result.tasks["after"].status == "Skipped"
