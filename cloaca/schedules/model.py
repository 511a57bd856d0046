"""Schedules and their executions, as the scheduler, its store and both runners see them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

CATCHUP_SKIP = "skip"  # the engine's default: fires missed while nothing ran are skipped


class ScheduleKind(str, enum.Enum):
    CRON = "cron"  # fires at the times of a cron expression
    TRIGGER = "trigger"  # polls a function every interval; fires when it says so


class Outcome(str, enum.Enum):
    CLAIMED = "claimed"  # this fire was taken: its run is about to start
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # the run failed, or could not start
    SKIPPED = "skipped"  # the previous run had not finished (no overlap without allow_concurrent)
    LOST = "lost"  # the service stopped while the fire was claimed or its run was under way
    POLL_ERROR = "poll_error"  # the trigger's function raised, or answered what a trigger cannot



def iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat()


@dataclass
class Schedule:
    id: str
    kind: ScheduleKind
    workflow: str
    owner: str = ""  # the tenant, in the service; "" in-process
    package: str = ""  # the package whose trigger this is; "" for one registered by API
    name: str = ""  # the trigger's name; "" for one registered by API
    cron_expression: str | None = None
    timezone: str = "UTC"
    poll_interval_ms: int | None = None
    allow_concurrent: bool = False
    catchup_policy: str = CATCHUP_SKIP
    enabled: bool = True
    active: bool = True  # False while its package is not loaded
    next_run_at: float | None = None  # epoch seconds (cron)
    last_run_at: float | None = None
    last_poll_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The engine's dict shapes (list_cron_schedules / list_trigger_schedules), plus who owns it."""
        common = {"id": self.id, "workflow_name": self.workflow, "enabled": self.enabled,
                  "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}
        if self.kind is ScheduleKind.CRON:
            return {**common, "cron_expression": self.cron_expression or "", "timezone": self.timezone or "UTC",
                    "catchup_policy": self.catchup_policy, "next_run_at": iso(self.next_run_at),
                    "last_run_at": iso(self.last_run_at)}
        return {**common, "trigger_name": self.name, "poll_interval_ms": self.poll_interval_ms or 0,
                "allow_concurrent": self.allow_concurrent, "last_poll_at": iso(self.last_poll_at)}


@dataclass
class Execution:
    id: str
    schedule_id: str
    outcome: Outcome
    claimed_at: float
    scheduled_time: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    run_id: str | None = None  # the workflow run it started
    context_hash: str | None = None  # a trigger's fired context, hashed
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "schedule_id": self.schedule_id, "outcome": self.outcome.value,
                "scheduled_time": iso(self.scheduled_time), "claimed_at": iso(self.claimed_at),
                "started_at": iso(self.started_at), "completed_at": iso(self.completed_at),
                "workflow_execution_id": self.run_id, "context_hash": self.context_hash, "error": self.error,
                "created_at": iso(self.claimed_at),
                "updated_at": iso(self.completed_at or self.started_at or self.claimed_at)}


@dataclass(frozen=True)
class TriggerDefinition:
    """One `@cloaca.trigger` of a package, as discovery reports it."""

    name: str
    workflow: str
    cron: str | None = None
    timezone: str | None = None
    poll_interval_ms: int | None = None
    allow_concurrent: bool = False

    @property
    def kind(self) -> ScheduleKind:
        return ScheduleKind.CRON if self.cron else ScheduleKind.TRIGGER


@dataclass(frozen=True)
class RunOutcome:
    """How a scheduled run ended."""

    status: str  # "completed" or "failed"
    run_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class PollOutcome:
    """What a trigger's poll said: fire (with an initial context), skip, or an error."""

    fire: bool
    context: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
