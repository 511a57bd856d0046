"""`cloaca.DefaultRunner`: runs a workflow in this process, as authors test them."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any, Mapping

from cloaca.context import Context
from cloaca.engine import TaskNode, WorkflowRun, run_workflow
from cloaca.errors import error_from_exception, TaskFailed
from cloaca.invoke import invoke_task
from cloaca.registry import REGISTRY, TaskSpec


class WorkflowNotFoundError(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


def _sqlite_target(url: str) -> str:
    if url == ":memory:":
        return ":memory:"
    for prefix in ("sqlite:///", "sqlite://"):
        if url.startswith(prefix):
            path = url[len(prefix):].split("?", 1)[0]
            if prefix == "sqlite:///" and not path.startswith(":"):
                path = "/" + path
            return path or ":memory:"
    raise ValueError(
        f"unsupported database URL {url!r}: DefaultRunner takes ':memory:' or 'sqlite://PATH'"
    )


class DefaultRunner:
    """Runs workflows declared in this interpreter and records each execution.

    Executions are written to the SQLite database the URL names (kept in
    memory for ":memory:"), in a table `executions`.
    """

    def __init__(self, database_url: str = ":memory:", max_parallel: int = 4) -> None:
        self._db = sqlite3.connect(_sqlite_target(database_url), check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS executions (id INTEGER PRIMARY KEY, workflow TEXT NOT NULL,"
            " status TEXT NOT NULL, started_at REAL NOT NULL, duration_ms REAL NOT NULL,"
            " final_context TEXT NOT NULL, error TEXT)"
        )
        self._db.commit()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max_parallel = max_parallel

    def execute(self, workflow_name: str, context: Context | Mapping[str, Any] | None = None) -> WorkflowRun:
        if self._stop.is_set():
            raise RuntimeError("this DefaultRunner has been shut down")
        specs = REGISTRY.workflow_tasks(workflow_name)
        if not specs:
            known = ", ".join(repr(name) for name in REGISTRY.workflow_names()) or "none"
            raise WorkflowNotFoundError(f"no workflow named {workflow_name!r} (known workflows: {known})")
        data = context.to_dict() if isinstance(context, Context) else Context(context).to_dict()
        by_id = {spec.id: spec for spec in specs}
        nodes = [TaskNode(spec.id, tuple(spec.dependencies), spec.retry, spec.trigger_rule) for spec in specs]

        def execute_locally(task_id: str, task_input: dict[str, Any]) -> dict[str, Any]:
            return _run_local(by_id[task_id], task_input)

        started = time.time()
        result = run_workflow(workflow_name, nodes, data, execute_locally, self._max_parallel, self._stop)
        self._record(result, started)
        return result

    def _record(self, result: WorkflowRun, started: float) -> None:
        error = result.error
        with self._lock:
            self._db.execute(
                "INSERT INTO executions (workflow, status, started_at, duration_ms, final_context, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (result.workflow, result.status.lower(), started, result.duration_ms,
                 result.final_context.to_json(), json.dumps(error.to_dict()) if error else None),
            )
            self._db.commit()

    def shutdown(self) -> None:
        """Stop waiting retries and close the database."""
        self._stop.set()
        with self._lock:
            self._db.close()

    def __enter__(self) -> "DefaultRunner":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()


def _run_local(spec: TaskSpec, data: dict[str, Any]) -> dict[str, Any]:
    try:
        return invoke_task(spec.function, data)
    except Exception as exc:  # noqa: BLE001 - any task failure becomes data
        raise TaskFailed(error_from_exception(exc)) from exc
