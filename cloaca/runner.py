"""`cloaca.DefaultRunner` and `cloaca.DefaultRunnerConfig`: run workflows in this process.

As in the engine's wheel: `DefaultRunner(database_url)`, `.with_config(url,
config)`, `.execute(workflow_name, context) -> WorkflowResult` (blocking; a
task's failure is in the result, not an exception; a run that cannot start
raises ValueError("Workflow execution failed: ...")), `.shutdown()`, use as a
context manager, and every runner is shut down at interpreter exit.

Databases: SQLite only (":memory:", "sqlite://:memory:", "sqlite:///abs/path",
"sqlite://path"); each execution is recorded in a table `executions`.
PostgreSQL URLs raise RuntimeError: this host has no PostgreSQL support.

Schedules, as in the engine: `register_cron_workflow(workflow, expression,
timezone) -> id`, `list_cron_schedules`, `get_cron_schedule`,
`update_cron_schedule`, `set_cron_schedule_enabled`, `delete_cron_schedule`,
`get_cron_execution_history`, `get_cron_execution_stats(since)`, and for the
`@cloaca.trigger`s declared in this process `list_trigger_schedules`,
`get_trigger_schedule`, `set_trigger_enabled`, `get_trigger_execution_history`.
Every method raises ValueError("Failed to ...: reason") as the engine does.
Schedules live in the runner's database (so a file database keeps them across
runs) and fire on a thread of the runner's own (`cloaca.schedules.local`).

Of `DefaultRunnerConfig`, `max_concurrent_tasks`, `task_timeout_seconds`,
`workflow_timeout_seconds` and `enable_cron_scheduling` (the schedule API and
its thread) shape what runs; the rest (polling, pool size, recovery, cron
tuning) are kept and reported but change nothing here: the engine and the
scheduler are event-driven, and a fire missed while nothing ran is skipped
(the engine's default catch-up policy).
"""

from __future__ import annotations

import atexit
import json
import re
import sqlite3
import threading
import time
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from cloaca.context import Context
from cloaca.engine import TaskNode, WorkflowPlan, WorkflowResult, run_workflow
from cloaca.errors import TaskFailed, error_from_exception
from cloaca.invoke import invoke_task
from cloaca.registry import REGISTRY
from cloaca.slots import current_slot
from cloaca.workflow import Workflow

if TYPE_CHECKING:
    from cloaca.schedules.local import LocalSchedules

T = TypeVar("T")
U64_MAX = 2**64 - 1
_SCHEMA = re.compile(r"^[A-Za-z0-9_]+$")


class WorkflowNotFoundError(ValueError):
    """execute() of a workflow nobody registered (a ValueError, as the engine raises)."""


class DefaultRunnerConfig:
    """The engine's runner settings, with its defaults; see the module docstring for which apply here."""

    _DEFAULTS: dict[str, Any] = {
        "max_concurrent_tasks": 4,
        "scheduler_poll_interval_ms": 100,
        "task_timeout_seconds": 300,
        "workflow_timeout_seconds": None,
        "db_pool_size": 10,
        "enable_recovery": True,
        "enable_cron_scheduling": True,
        "cron_poll_interval_seconds": 30,
        "cron_max_catchup_executions": U64_MAX,
        "cron_enable_recovery": True,
        "cron_recovery_interval_seconds": 300,
        "cron_lost_threshold_minutes": 10,
        "cron_max_recovery_age_seconds": 86_400,
        "cron_max_recovery_attempts": 3,
    }

    def __init__(self, max_concurrent_tasks: int | None = None, scheduler_poll_interval_ms: int | None = None,
                 task_timeout_seconds: int | None = None, workflow_timeout_seconds: int | None = None,
                 db_pool_size: int | None = None, enable_recovery: bool | None = None,
                 enable_cron_scheduling: bool | None = None, cron_poll_interval_seconds: int | None = None,
                 cron_max_catchup_executions: int | None = None, cron_enable_recovery: bool | None = None,
                 cron_recovery_interval_seconds: int | None = None, cron_lost_threshold_minutes: int | None = None,
                 cron_max_recovery_age_seconds: int | None = None,
                 cron_max_recovery_attempts: int | None = None) -> None:
        given = {name: value for name, value in locals().items() if name != "self" and value is not None}
        values = dict(self._DEFAULTS)
        for name, value in given.items():
            values[name] = self._checked(name, value)
        object.__setattr__(self, "_values", values)

    @classmethod
    def _checked(cls, name: str, value: Any) -> Any:
        default = cls._DEFAULTS[name]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, not {type(value).__qualname__}")
            return value
        if value is None and name == "workflow_timeout_seconds":
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__qualname__}")
        if value < 0 or (name == "max_concurrent_tasks" and value < 1):
            raise ValueError(f"Invalid configuration: {name} must be {'at least 1' if value >= 0 else 'positive'}, "
                             f"got {value}")
        return value

    @staticmethod
    def default() -> "DefaultRunnerConfig":
        return DefaultRunnerConfig()

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"'DefaultRunnerConfig' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._DEFAULTS:
            raise AttributeError(f"'DefaultRunnerConfig' object has no attribute {name!r}")
        self._values[name] = self._checked(name, value)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return (f"DefaultRunnerConfig(max_concurrent_tasks={self.max_concurrent_tasks}, "
                f"enable_cron_scheduling={'true' if self.enable_cron_scheduling else 'false'}, "
                f"db_pool_size={self.db_pool_size})")


def _sqlite_target(url: str) -> str:
    if url == ":memory:":
        return ":memory:"
    for prefix in ("sqlite://", "sqlite:"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            return path or ":memory:"
    if url.startswith(("postgres://", "postgresql://")):
        raise RuntimeError(f"Failed to create DefaultRunner: PostgreSQL ({url.split('://')[0]}://...) is not "
                           "supported by this host; use a sqlite:// URL")
    raise RuntimeError(f"Failed to create DefaultRunner: unsupported database URL {url!r}; "
                       "use ':memory:' or 'sqlite://PATH'")


_runners: "weakref.WeakSet[DefaultRunner]" = weakref.WeakSet()


def _shutdown_all_runners() -> None:
    """Shut every live DefaultRunner down (registered with atexit, as in the engine)."""
    for runner in list(_runners):
        runner.shutdown()


atexit.register(_shutdown_all_runners)


class DefaultRunner:
    def __init__(self, database_url: str = ":memory:", config: DefaultRunnerConfig | None = None) -> None:
        if not isinstance(database_url, str):
            raise TypeError(f"database_url must be a string, not {type(database_url).__qualname__}")
        target = _sqlite_target(database_url)
        self.config = config or DefaultRunnerConfig()
        try:
            self._db = sqlite3.connect(target, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS executions (id INTEGER PRIMARY KEY, workflow TEXT NOT NULL,"
                " status TEXT NOT NULL, started_at REAL NOT NULL, duration_ms REAL NOT NULL,"
                " final_context TEXT NOT NULL, error TEXT)")
            self._db.commit()
        except sqlite3.Error as exc:
            raise RuntimeError(f"Failed to create DefaultRunner: cannot open {database_url!r}: {exc}") from None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._slots = threading.Semaphore(self.config.max_concurrent_tasks)
        self._target = target
        self._schedules: LocalSchedules | None = None
        if self.config.enable_cron_scheduling:
            self._open_schedules().sync_triggers()
        _runners.add(self)

    @classmethod
    def with_config(cls, database_url: str, config: DefaultRunnerConfig) -> "DefaultRunner":
        if not isinstance(config, DefaultRunnerConfig):
            raise TypeError(f"config must be a cloaca.DefaultRunnerConfig, not {type(config).__qualname__}")
        return cls(database_url, config)

    @classmethod
    def with_schema(cls, database_url: str, schema: str) -> "DefaultRunner":
        if not isinstance(schema, str) or not _SCHEMA.match(schema):
            raise ValueError(f"Invalid schema name {schema!r}: use only letters, digits and underscores")
        raise RuntimeError("Failed to create DefaultRunner: schema-based multi-tenancy needs PostgreSQL, "
                           "which this host does not support")

    def execute(self, workflow_name: str, context: Context | Mapping[str, Any] | None = None) -> WorkflowResult:
        """Run a registered workflow to the end; a task's failure is in the result."""
        return self._execute_recorded(workflow_name, context)[0]

    def _execute_recorded(self, workflow_name: str,
                          context: Context | Mapping[str, Any] | None) -> tuple[WorkflowResult, str | None]:
        """execute(), and the id of the run's record in the database (None once shut down)."""
        if self._stop.is_set():
            raise ValueError("Workflow execution failed: this DefaultRunner has been shut down")
        workflow = REGISTRY.workflow(workflow_name)
        if workflow is None:
            known = ", ".join(repr(name) for name in REGISTRY.workflows) or "none"
            raise WorkflowNotFoundError(
                f"Workflow execution failed: no workflow named {workflow_name!r} is registered (registered: {known})")
        _refuse_unsupported(workflow_name)
        data = context.to_dict() if isinstance(context, Context) else Context(context).to_dict()
        plan = plan_for(workflow_name, workflow)
        try:
            initial = plan.initial_context(data)
        except ValueError as exc:
            raise ValueError(f"Workflow execution failed: {exc}") from None
        started = time.time()
        result = run_workflow(plan.name, plan.nodes, initial, _execute_locally(workflow), stop=self._stop,
                              slots=self._slots, task_timeout=self.config.task_timeout_seconds,
                              workflow_timeout=self.config.workflow_timeout_seconds)
        return result, self._record(result, started)

    def _record(self, result: WorkflowResult, started: float) -> str | None:
        error = result.error
        with self._lock:
            if self._db is None:
                return None
            cursor = self._db.execute(
                "INSERT INTO executions (workflow, status, started_at, duration_ms, final_context, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (result.workflow, result.status.lower(), started, result.duration_ms,
                 result.final_context.to_json(), json.dumps(error.to_dict()) if error else None))
            self._db.commit()
            return str(cursor.lastrowid)

    # --- schedules ---------------------------------------------------------------------

    def _open_schedules(self) -> "LocalSchedules":
        if self._schedules is None:
            from cloaca.schedules.local import LocalSchedules  # imported only by runners that schedule

            self._schedules = LocalSchedules(self, self._target)
        return self._schedules

    def _scheduling(self, action: str, work: Callable[["LocalSchedules"], T]) -> T:
        """Run one schedule operation; every failure is ValueError("Failed to <action>: why"), as in the engine."""
        from cloaca.schedules.cron import CronError
        from cloaca.schedules.store import UnknownScheduleError

        if not self.config.enable_cron_scheduling:
            raise ValueError(f"Failed to {action}: cron scheduling is disabled "
                             "(DefaultRunnerConfig(enable_cron_scheduling=False))")
        if self._stop.is_set():
            raise ValueError(f"Failed to {action}: this DefaultRunner has been shut down")
        try:
            return work(self._open_schedules())
        except (_Refused, CronError, UnknownScheduleError, sqlite3.Error) as exc:
            raise ValueError(f"Failed to {action}: {exc}") from None

    def register_cron_workflow(self, workflow_name: str, cron_expression: str, timezone: str = "UTC") -> str:
        """Run `workflow_name` at the times of a cron expression (5 fields, or 6 with seconds first)."""
        def register(schedules: "LocalSchedules") -> str:
            if REGISTRY.workflow(workflow_name) is None:
                raise _Refused(f"no workflow named {workflow_name!r} is registered")
            schedule = schedules.store.register_cron(workflow_name, cron_expression, timezone)
            schedules.changed()
            return schedule.id

        return self._scheduling("register cron workflow", register)

    def list_cron_schedules(self, enabled_only: bool | None = None, limit: int | None = None,
                            offset: int | None = None) -> list[dict[str, Any]]:
        from cloaca.schedules.model import ScheduleKind

        return self._scheduling("list cron schedules", lambda schedules: [
            schedule.to_dict() for schedule in schedules.store.schedules(
                ScheduleKind.CRON, enabled_only=bool(enabled_only), limit=_count(limit, 100),
                offset=_count(offset, 0))])

    def get_cron_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._scheduling("get cron schedule", lambda schedules: _cron(schedules, schedule_id).to_dict())

    def update_cron_schedule(self, schedule_id: str, cron_expression: str, timezone: str = "UTC") -> None:
        def update(schedules: "LocalSchedules") -> None:
            _cron(schedules, schedule_id)
            schedules.store.update_cron(schedule_id, cron_expression, timezone)
            schedules.changed()

        self._scheduling("update cron schedule", update)

    def set_cron_schedule_enabled(self, schedule_id: str, enabled: bool) -> None:
        def set_enabled(schedules: "LocalSchedules") -> None:
            _cron(schedules, schedule_id)
            schedules.store.set_enabled(schedule_id, bool(enabled))
            schedules.changed()

        self._scheduling("update cron schedule", set_enabled)

    def delete_cron_schedule(self, schedule_id: str) -> None:
        def delete(schedules: "LocalSchedules") -> None:
            _cron(schedules, schedule_id)
            schedules.store.delete(schedule_id)
            schedules.changed()

        self._scheduling("delete cron schedule", delete)

    def get_cron_execution_history(self, schedule_id: str, limit: int | None = None,
                                   offset: int | None = None) -> list[dict[str, Any]]:
        def history(schedules: "LocalSchedules") -> list[dict[str, Any]]:
            _cron(schedules, schedule_id)
            return [execution.to_dict() for execution in
                    schedules.store.executions(schedule_id, _count(limit, 100), _count(offset, 0))]

        return self._scheduling("get cron execution history", history)

    def get_cron_execution_stats(self, since: str) -> dict[str, Any]:
        """total_executions, successful_executions, lost_executions and success_rate since an RFC 3339 time."""
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00")) if isinstance(since, str) else None
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"Invalid datetime format: {since!r} is not an RFC 3339 time with an offset "
                             "(e.g. '2026-01-01T00:00:00Z')")
        return self._scheduling("get cron execution stats",
                                lambda schedules: schedules.store.stats(moment.timestamp()))

    def list_trigger_schedules(self, enabled_only: bool | None = None, limit: int | None = None,
                               offset: int | None = None) -> list[dict[str, Any]]:
        from cloaca.schedules.model import ScheduleKind

        def listing(schedules: "LocalSchedules") -> list[dict[str, Any]]:
            schedules.sync_triggers()
            return [schedule.to_dict() for schedule in schedules.store.schedules(
                ScheduleKind.TRIGGER, owner="", enabled_only=bool(enabled_only), limit=_count(limit, 100),
                offset=_count(offset, 0))]

        return self._scheduling("list trigger schedules", listing)

    def get_trigger_schedule(self, trigger_name: str) -> dict[str, Any] | None:
        def get(schedules: "LocalSchedules") -> dict[str, Any] | None:
            schedules.sync_triggers()
            found = schedules.store.find_trigger(trigger_name)
            return found.to_dict() if found is not None else None

        return self._scheduling("get trigger schedule", get)

    def set_trigger_enabled(self, trigger_name: str, enabled: bool) -> None:
        def set_enabled(schedules: "LocalSchedules") -> None:
            schedules.sync_triggers()
            found = schedules.store.find_trigger(trigger_name)
            if found is None:
                raise _Refused(f"no trigger named {trigger_name!r}")
            schedules.store.set_enabled(found.id, bool(enabled))
            schedules.changed()

        self._scheduling("update trigger", set_enabled)

    def get_trigger_execution_history(self, trigger_name: str, limit: int | None = None,
                                      offset: int | None = None) -> list[dict[str, Any]]:
        def history(schedules: "LocalSchedules") -> list[dict[str, Any]]:
            schedules.sync_triggers()
            found = schedules.store.find_trigger(trigger_name)
            if found is None:
                return []
            return [execution.to_dict() for execution in
                    schedules.store.executions(found.id, _count(limit, 100), _count(offset, 0))]

        return self._scheduling("get trigger execution history", history)

    def shutdown(self) -> None:
        """Stop the schedules, waiting retries and pending tasks of runs under way; close the database."""
        self._stop.set()
        if self._schedules is not None:
            self._schedules.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "DefaultRunner":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        self.shutdown()
        return False


class _Refused(Exception):
    """A schedule operation the runner refuses; reported as ValueError("Failed to ...: why")."""


def _count(value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"limit and offset are whole numbers >= 0, not {value!r}")
    return value


def _cron(schedules: "LocalSchedules", schedule_id: str) -> Any:
    """The cron schedule `schedule_id`, or UnknownScheduleError."""
    from cloaca.schedules.model import ScheduleKind
    from cloaca.schedules.store import UnknownScheduleError

    schedule = schedules.store.get(schedule_id)
    if schedule.kind is not ScheduleKind.CRON:
        raise UnknownScheduleError(f"{schedule_id!r} is a trigger schedule, not a cron schedule")
    return schedule


def plan_for(name: str, workflow: Workflow) -> WorkflowPlan:
    """The engine's view of a registered workflow."""
    nodes = tuple(TaskNode(spec.id, tuple(spec.dependencies), spec.retry, spec.trigger_rule)
                  for spec in workflow.task_specs.values())
    return WorkflowPlan(name, nodes, workflow.params)


def _refuse_unsupported(workflow_name: str) -> None:
    uses = [use for use in REGISTRY.unsupported if use.workflow == workflow_name]
    if uses:
        raise ValueError(f"Workflow execution failed: workflow {workflow_name!r} uses features this host does not "
                         "run: " + "; ".join(use.detail for use in uses))


def _execute_locally(workflow: Workflow) -> Any:
    def execute(task_id: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            return invoke_task(workflow.task_specs[task_id], data, slot=current_slot())
        except BaseException as exc:  # noqa: BLE001 - any failure of the task is data
            raise TaskFailed(error_from_exception(exc)) from exc

    return execute
