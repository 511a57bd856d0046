"""Schedules in-process: cron expressions, the store's at-most-once claims, and DefaultRunner's schedule API.

Real threads, a real SQLite file, real time: schedules fire every second or every
100 ms, and every wait is on a condition with a generous deadline.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

import cloaca
from cloaca.schedules.cron import CronError, CronExpression
from cloaca.schedules.model import Outcome, Schedule, ScheduleKind, TriggerDefinition
from cloaca.schedules.store import ScheduleStore
from cloaca.triggers import poll_answer
from tests.waiting import wait_for

DEADLINE = 30.0
ENGINE_CRON_KEYS = {"id", "workflow_name", "cron_expression", "timezone", "enabled", "catchup_policy", "next_run_at",
                    "last_run_at", "created_at", "updated_at"}
ENGINE_TRIGGER_KEYS = {"id", "trigger_name", "workflow_name", "poll_interval_ms", "allow_concurrent", "enabled",
                       "last_poll_at", "created_at", "updated_at"}
ENGINE_CRON_EXECUTION_KEYS = {"id", "schedule_id", "scheduled_time", "claimed_at", "workflow_execution_id",
                              "created_at", "updated_at"}
ENGINE_TRIGGER_EXECUTION_KEYS = {"id", "schedule_id", "context_hash", "workflow_execution_id", "started_at",
                                 "completed_at", "created_at"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


# --- cron expressions -------------------------------------------------------------------------

def test_six_fields_read_seconds_first_and_five_fields_minutes():
    assert CronExpression("*/3 * * * * *").next_after(utc(2026, 1, 1, 0, 0, 1)) == utc(2026, 1, 1, 0, 0, 3)
    assert CronExpression("*/15 * * * *").next_after(utc(2026, 1, 1, 0, 1, 0)) == utc(2026, 1, 1, 0, 15)
    assert CronExpression("0 0 12 * * 1").next_after(utc(2026, 1, 1)) == utc(2026, 1, 5, 12)  # a Monday


def test_a_timezone_keeps_local_time_across_daylight_saving():
    paris = CronExpression("0 2 * * *", "Europe/Paris")
    assert paris.next_after(utc(2026, 1, 10, 12)) == utc(2026, 1, 11, 1)  # 02:00 CET = 01:00 UTC
    assert paris.next_after(utc(2026, 7, 10, 12)) == utc(2026, 7, 11, 0)  # 02:00 CEST = 00:00 UTC


@pytest.mark.parametrize("expression, zone, message", [
    ("* * *", None, "has 3 fields"),
    ("61 * * * *", None, "is not valid"),
    ("", None, "5 or 6 fields"),
    ("* * * * *", "Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
])
def test_bad_cron_expressions_and_timezones_are_named(expression, zone, message):
    with pytest.raises(CronError, match=message):
        CronExpression(expression, zone)


def test_poll_answers_follow_the_engine():
    assert poll_answer(True) == (True, {})
    assert poll_answer(False) == (False, {})
    assert poll_answer(cloaca.TriggerResult.skip()) == (False, {})
    assert poll_answer(cloaca.TriggerResult.fire()) == (True, {})
    assert poll_answer(cloaca.TriggerResult.fire(cloaca.Context({"file": "a.csv"}))) == (True, {"file": "a.csv"})
    for wrong in (None, 1, "fire", {"fire": True}):
        with pytest.raises(TypeError, match="must return cloaca.TriggerResult or a bool"):
            poll_answer(wrong)


# --- the store ----------------------------------------------------------------------------------

def test_a_fire_is_claimed_once_even_by_two_stores_over_one_database(tmp_path: Path):
    """The compare-and-set on next_run_at: what keeps a restart, or a second supervisor, from firing twice."""
    first, second = ScheduleStore(tmp_path / "s.db"), ScheduleStore(tmp_path / "s.db")
    try:
        schedule = first.register_cron("wf", "* * * * * *")
        seen_by_second = second.get(schedule.id)
        assert seen_by_second.next_run_at == schedule.next_run_at
        following = schedule.next_run_at + 1
        claims = [first.claim_cron_fire(schedule, following), second.claim_cron_fire(seen_by_second, following)]
        assert sum(claim is not None for claim in claims) == 1
        assert len(first.executions(schedule.id)) == 1
        assert second.get(schedule.id).next_run_at == following
    finally:
        first.close()
        second.close()


def test_recovery_marks_unfinished_runs_lost_and_skips_missed_fires(tmp_path: Path):
    now = [1_000_000.0]
    store = ScheduleStore(tmp_path / "s.db", clock=lambda: now[0])
    schedule = store.register_cron("wf", "* * * * * *")
    execution = store.claim_cron_fire(schedule, schedule.next_run_at + 1)
    assert execution is not None
    store.update_execution(execution.id, Outcome.RUNNING)
    store.close()

    now[0] += 3600  # an hour down: 3600 fires missed
    store = ScheduleStore(tmp_path / "s.db", clock=lambda: now[0])
    try:
        assert store.recover() == 1
        [lost] = store.executions(schedule.id)
        assert lost.outcome is Outcome.LOST and "stopped before this run finished" in lost.error
        assert store.get(schedule.id).next_run_at == now[0] + 1  # the next fire from now: none caught up
    finally:
        store.close()


def test_a_package_reload_keeps_its_triggers_history_and_pause(tmp_path: Path):
    store = ScheduleStore(tmp_path / "s.db")
    try:
        cron = TriggerDefinition("nightly", "etl", cron="0 2 * * *", timezone="Europe/Paris")
        poll = TriggerDefinition("inbox", "etl", poll_interval_ms=500)
        first = {s.name: s for s in store.sync_package("acme", "etl", [cron, poll])}
        first_cron, first_poll = first["nightly"], first["inbox"]
        store.set_enabled(first_poll.id, False)

        kept = {s.name: s for s in store.sync_package("acme", "etl", [cron, poll])}
        assert kept["nightly"].id == first_cron.id and kept["nightly"].next_run_at == first_cron.next_run_at
        assert kept["inbox"].id == first_poll.id and not kept["inbox"].enabled  # a pause survives a reload

        changed = store.sync_package("acme", "etl", [TriggerDefinition("nightly", "etl", cron="0 3 * * *",
                                                                       timezone="Europe/Paris")])
        assert [s.name for s in changed] == ["nightly"] and changed[0].cron_expression == "0 3 * * *"
        assert store.find_trigger("inbox", "acme") is None  # dropped by the new version: inactive

        store.deactivate_package("acme", "etl")
        assert store.schedules(owner="acme") == []
        assert store.sync_package("other", "etl", [poll])[0].id != first_poll.id  # tenants never share
    finally:
        store.close()


def test_history_is_bounded_per_schedule_and_per_package(tmp_path: Path):
    """A trigger that fails at every 100 ms poll, or a package run every second, cannot fill the disk."""
    from supervisor.run_history import RunHistory

    store = ScheduleStore(tmp_path / "s.db", history_kept=5)
    try:
        noisy, quiet = store.register_cron("wf", "* * * * *"), store.register_cron("wf", "* * * * *")
        store.record_poll(quiet, Outcome.POLL_ERROR, "once")
        for attempt in range(12):
            store.record_poll(noisy, Outcome.POLL_ERROR, f"attempt {attempt}")
        kept = store.executions(noisy.id)
        assert [e.error for e in kept] == [f"attempt {n}" for n in range(11, 6, -1)]  # the newest five
        assert len(store.executions(quiet.id)) == 1  # another schedule's history is its own
    finally:
        store.close()

    runs = RunHistory(tmp_path / "runs.db", runs_kept=3)
    try:
        under_way = runs.started("acme", "etl", "wf")
        for _ in range(6):
            runs.finished(runs.started("acme", "etl", "wf"), "completed", None, 1.0)
        other = runs.started("acme", "other", "wf")
        listed = runs.runs("acme", "etl")
        assert len(listed) == 3 + 1 and under_way in {r.id for r in listed}  # a running one is never dropped
        assert [r.id for r in runs.runs("acme", "other")] == [other]
    finally:
        runs.close()


# --- DefaultRunner's schedule API --------------------------------------------------------------------

@pytest.fixture
def ticks(clean_registry: None) -> Iterator[list[dict[str, Any]]]:
    """A workflow `tick` whose task records every input it was given."""
    seen: list[dict[str, Any]] = []

    with cloaca.WorkflowBuilder("tick") as builder:
        builder.description("records each run")

        @cloaca.task(id="beat")
        def beat(context: cloaca.Context) -> cloaca.Context:
            seen.append(context.to_dict())
            context.set("beat", True)
            return context

    yield seen


def completed(runner: cloaca.DefaultRunner, schedule_id: str) -> list[dict[str, Any]]:
    return [e for e in runner.get_cron_execution_history(schedule_id) if e["outcome"] == "completed"]


def test_cron_workflows_fire_and_are_listed_with_their_history(ticks, tmp_path: Path):
    with cloaca.DefaultRunner(f"sqlite://{tmp_path / 'app.db'}") as runner:
        schedule_id = runner.register_cron_workflow("tick", "* * * * * *", "UTC")
        assert isinstance(schedule_id, str)
        [listed] = runner.list_cron_schedules()
        assert ENGINE_CRON_KEYS <= set(listed) and listed["id"] == schedule_id
        assert listed["cron_expression"] == "* * * * * *" and listed["catchup_policy"] == "skip"
        assert runner.get_cron_schedule(schedule_id) == listed

        history = wait_for(lambda: len(completed(runner, schedule_id)) >= 2 and completed(runner, schedule_id),
                           DEADLINE, "two cron fires")
        assert ENGINE_CRON_EXECUTION_KEYS <= set(history[0])
        assert all(e["workflow_execution_id"] for e in history)
        assert len({e["scheduled_time"] for e in history}) == len(history)  # each second fired once
        assert len(ticks) >= 2
        stats = runner.get_cron_execution_stats("2000-01-01T00:00:00Z")
        assert stats["total_executions"] >= 2 and stats["successful_executions"] >= 2
        assert stats["lost_executions"] == 0 and 0 < stats["success_rate"] <= 1


def test_paused_updated_and_deleted_cron_schedules(ticks):
    with cloaca.DefaultRunner(":memory:") as runner:
        paused = runner.register_cron_workflow("tick", "* * * * * *")
        wait_for(lambda: completed(runner, paused), DEADLINE, "a first fire")
        runner.set_cron_schedule_enabled(paused, False)
        fired_before = len(runner.get_cron_execution_history(paused))
        assert runner.list_cron_schedules(enabled_only=True) == []

        witness = runner.register_cron_workflow("tick", "* * * * * *")
        wait_for(lambda: len(completed(runner, witness)) >= 2, DEADLINE, "two fires of a second schedule")
        assert len(runner.get_cron_execution_history(paused)) == fired_before  # the paused one stayed quiet

        runner.update_cron_schedule(witness, "0 0 3 * * *", "Asia/Tokyo")
        updated = runner.get_cron_schedule(witness)
        assert updated["cron_expression"] == "0 0 3 * * *" and updated["timezone"] == "Asia/Tokyo"
        assert updated["next_run_at"].endswith("18:00:00+00:00")  # 03:00 in Tokyo

        runner.delete_cron_schedule(paused)
        assert [s["id"] for s in runner.list_cron_schedules()] == [witness]
        with pytest.raises(ValueError, match="Failed to get cron schedule: no schedule"):
            runner.get_cron_schedule(paused)


@pytest.mark.parametrize("call, message", [
    (lambda r: r.register_cron_workflow("missing", "* * * * *"), "Failed to register cron workflow: no workflow "
                                                                  "named 'missing'"),
    (lambda r: r.register_cron_workflow("tick", "* * *"), "Failed to register cron workflow: cron expression"),
    (lambda r: r.register_cron_workflow("tick", "* * * * *", "Nowhere/City"), "unknown timezone"),
    (lambda r: r.delete_cron_schedule("no-such-id"), "Failed to delete cron schedule: no schedule"),
    (lambda r: r.set_trigger_enabled("no-such-trigger", True), "Failed to update trigger: no trigger named"),
    (lambda r: r.get_cron_execution_stats("yesterday"), "Invalid datetime format"),
])
def test_schedule_api_errors_are_value_errors(ticks, call, message):
    with cloaca.DefaultRunner(":memory:") as runner:
        with pytest.raises(ValueError, match=message):
            call(runner)
        assert runner.list_cron_schedules() == []


def test_the_schedule_api_is_off_when_cron_scheduling_is_disabled(ticks):
    config = cloaca.DefaultRunnerConfig(enable_cron_scheduling=False)
    with cloaca.DefaultRunner.with_config(":memory:", config) as runner:
        with pytest.raises(ValueError, match="cron scheduling is disabled"):
            runner.register_cron_workflow("tick", "* * * * *")


def test_poll_triggers_fire_with_their_context_and_record_poll_errors(ticks):
    polls = Counter[str]()
    answers = iter([False, cloaca.TriggerResult.fire(cloaca.Context({"file": "in/a.csv"})),
                    cloaca.TriggerResult.skip(), RuntimeError("the inbox is unreachable"), "not an answer", True])

    @cloaca.trigger(on="tick", poll_interval="100ms")
    def inbox() -> Any:
        polls["inbox"] += 1
        answer = next(answers, False)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with cloaca.DefaultRunner(":memory:") as runner:
        [listed] = runner.list_trigger_schedules()
        assert ENGINE_TRIGGER_KEYS <= set(listed)
        assert listed["trigger_name"] == "inbox" and listed["poll_interval_ms"] == 100
        def finished() -> list[dict[str, Any]]:
            history = runner.get_trigger_execution_history("inbox")
            return [e for e in history if e["outcome"] in ("completed", "poll_error")]

        history = wait_for(lambda: len(finished()) >= 4 and finished(), DEADLINE, "two fires and two poll errors")
        outcomes = Counter(e["outcome"] for e in history)
        assert outcomes == {"completed": 2, "poll_error": 2}, history
        assert ENGINE_TRIGGER_EXECUTION_KEYS <= set(history[0])
        errors = sorted(e["error"] for e in history if e["outcome"] == "poll_error")
        assert errors[0] == "RuntimeError: the inbox is unreachable"
        assert "must return cloaca.TriggerResult or a bool, not str" in errors[1]
        assert {"file": "in/a.csv"} in ticks and {} in ticks  # fire(ctx) gives its context, True an empty one
        assert runner.get_trigger_schedule("inbox")["last_poll_at"] is not None

        runner.set_trigger_enabled("inbox", False)
        assert runner.get_trigger_schedule("inbox")["enabled"] is False
        assert runner.list_trigger_schedules(enabled_only=True) == []
    assert not [t for t in threading.enumerate() if t.name == "cloaca-schedules"]  # shutdown stopped the poller


def test_no_overlapping_runs_unless_allowed(clean_registry):
    release = threading.Event()
    running = Counter[str]()

    with cloaca.WorkflowBuilder("slow") as builder:
        builder.description("holds until released")

        @cloaca.task(id="hold")
        def hold(context: cloaca.Context) -> cloaca.Context:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
            release.wait(DEADLINE)
            running["now"] -= 1
            return context

    with cloaca.DefaultRunner(":memory:") as runner:
        schedule_id = runner.register_cron_workflow("slow", "* * * * * *")
        skipped = wait_for(lambda: [e for e in runner.get_cron_execution_history(schedule_id)
                                    if e["outcome"] == "skipped"], DEADLINE, "a fire skipped while the first run holds")
        assert "previous run had not finished" in skipped[0]["error"]
        assert running["most"] == 1
        release.set()
        wait_for(lambda: completed(runner, schedule_id), DEADLINE, "the held run to complete")


def test_a_restart_neither_loses_nor_repeats_a_fire(clean_registry, tmp_path: Path):
    """A run under way when the runner stops is recorded lost at the next start, never run again; the
    schedule goes on from its next fire time, and no fire time is ever taken twice."""
    release = threading.Event()

    with cloaca.WorkflowBuilder("slow") as builder:
        builder.description("the first run holds")

        @cloaca.task(id="hold")
        def hold(context: cloaca.Context) -> cloaca.Context:
            if not release.is_set():
                release.wait(2.0)
            return context

    url = f"sqlite://{tmp_path / 'app.db'}"
    first = cloaca.DefaultRunner(url)
    schedule_id = first.register_cron_workflow("slow", "* * * * * *")
    wait_for(lambda: any(e["outcome"] == "running" for e in first.get_cron_execution_history(schedule_id)),
             DEADLINE, "a run under way")
    first.shutdown()
    release.set()

    with cloaca.DefaultRunner(url) as second:
        [kept] = second.list_cron_schedules()
        assert kept["id"] == schedule_id
        history = wait_for(lambda: completed(second, schedule_id) and second.get_cron_execution_history(schedule_id),
                           DEADLINE, "a fire after the restart")
        outcomes = Counter(e["outcome"] for e in history)
        assert outcomes["lost"] >= 1
        times = [e["scheduled_time"] for e in history]
        assert len(times) == len(set(times)), times


def test_schedule_model_dicts_match_the_engine_for_both_kinds():
    cron = Schedule(id="a", kind=ScheduleKind.CRON, workflow="w", cron_expression="* * * * *", created_at=1.0,
                    updated_at=1.0)
    trigger = Schedule(id="b", kind=ScheduleKind.TRIGGER, workflow="w", name="t", poll_interval_ms=100,
                       created_at=1.0, updated_at=1.0)
    assert set(cron.to_dict()) == ENGINE_CRON_KEYS
    assert set(trigger.to_dict()) == ENGINE_TRIGGER_KEYS
