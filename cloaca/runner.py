"""`cloaca.DefaultRunner` and `cloaca.DefaultRunnerConfig`: run workflows in this process.

As in the engine's wheel: `DefaultRunner(database_url)`, `.with_config(url,
config)`, `.execute(workflow_name, context) -> WorkflowResult` (blocking; a
task's failure is in the result, not an exception; a run that cannot start
raises ValueError("Workflow execution failed: ...")), `.shutdown()`, use as a
context manager, and every runner is shut down at interpreter exit.

Databases: SQLite only (":memory:", "sqlite://:memory:", "sqlite:///abs/path",
"sqlite://path"); each execution is recorded in a table `executions`.
PostgreSQL URLs raise RuntimeError: this host has no PostgreSQL support.

Of `DefaultRunnerConfig`, `max_concurrent_tasks`, `task_timeout_seconds` and
`workflow_timeout_seconds` shape a run; the rest (polling, pool size,
recovery, cron) are kept and reported but change nothing here: the engine is
event-driven, and this host has no cron scheduler or crash recovery.
"""

from __future__ import annotations

import atexit
import json
import re
import sqlite3
import threading
import time
import weakref
from typing import Any, Mapping

from cloaca.context import Context
from cloaca.engine import TaskNode, WorkflowPlan, WorkflowResult, run_workflow
from cloaca.errors import TaskFailed, error_from_exception
from cloaca.invoke import invoke_task
from cloaca.registry import REGISTRY
from cloaca.slots import current_slot
from cloaca.workflow import Workflow

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
        self._record(result, started)
        return result

    def _record(self, result: WorkflowResult, started: float) -> None:
        error = result.error
        with self._lock:
            if self._db is None:
                return
            self._db.execute(
                "INSERT INTO executions (workflow, status, started_at, duration_ms, final_context, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (result.workflow, result.status.lower(), started, result.duration_ms,
                 result.final_context.to_json(), json.dumps(error.to_dict()) if error else None))
            self._db.commit()

    def shutdown(self) -> None:
        """Stop waiting retries and pending tasks of runs under way, and close the database."""
        self._stop.set()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __enter__(self) -> "DefaultRunner":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        self.shutdown()
        return False


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
