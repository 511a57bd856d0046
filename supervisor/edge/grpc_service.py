"""The public gRPC service, cloaca.sandbox.v1.Supervisor, over a PackageHost, on grpc.aio.

This module only translates: requests to host calls, results to messages, and
refusals to gRPC status codes with a message a person can act on. No request
holds a thread while it waits. Each request first passes its tenant's quota
(edge/quotas.py), so one tenant's load never refuses another's requests.

A call's deadline is the least of the client's own deadline, its
`timeout_seconds` and the package's call timeout; a client that cancels, or
whose deadline passes, frees its sandbox slot at once (the call is cancelled in
the sandbox where the task allows it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Callable, NoReturn

import grpc

from cloaca.engine import TaskOutcome, WorkflowRun
from cloaca.errors import TaskError
from supervisor.api import supervisor_pb2 as pb
from supervisor.api import supervisor_pb2_grpc
from supervisor.registry.base import PARTIAL_UPLOAD_PREFIX, RegistryUnavailable, VersionConflictError
from supervisor.edge.auth import Authenticator
from supervisor.edge.quotas import QuotaExceeded, TenantQuotas
from supervisor.edge.redaction import no_redaction
from supervisor.errors import PackageError
from cloaca.schedules.model import Execution, ScheduleKind
from supervisor.package_log import OUTPUT, LogEntry
from supervisor.results import CallRejected, CallResult
from supervisor.run_history import RunRecord
from supervisor.scheduling import ScheduleView, UnknownScheduleError
from supervisor.tenants import FAILED, LOADING, READY, PackageHost, PackageView

if TYPE_CHECKING:
    from supervisor.metrics import ServiceMetrics

log = logging.getLogger(__name__)

_STATES = {LOADING: pb.Package.LOADING, READY: pb.Package.READY, FAILED: pb.Package.FAILED}
_STATUSES = {"completed": pb.COMPLETED, "failed": pb.FAILED, "skipped": pb.SKIPPED}
_REJECTIONS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


Redact = Callable[[str], str]  # what removes the server's paths from text a tenant sees (edge/redaction.py)


def error_message(error: TaskError | None, redact: Redact = no_redaction) -> pb.TaskError | None:
    if error is None:
        return None
    return pb.TaskError(kind=error.kind, type=error.type, message=redact(error.message),
                        traceback=redact(error.traceback),
                        frames=[pb.Frame(file=redact(f.file), line=f.line, function=f.function) for f in error.frames])


def package_message(view: PackageView, redact: Redact = no_redaction) -> pb.Package:
    message = pb.Package(name=view.name, version=view.version, state=_STATES[view.state], error=redact(view.error),
                         source=redact(view.source))
    if view.info is not None:
        message.pid = view.info.pid or 0
        message.restarts = view.info.restarts
        message.memory_bytes = view.info.memory_bytes
        message.fingerprint = view.info.fingerprint
        message.isolation.update(view.info.isolation)
        message.memory_peak_bytes = view.info.memory_peak_bytes
        message.restart_causes.update(view.info.restart_causes)
        message.sandbox_state = view.info.state
        limits = view.info.limits
        if limits is not None:
            message.limits.CopyFrom(pb.Limits(
                import_timeout_seconds=limits.import_timeout, call_timeout_seconds=limits.call_timeout,
                memory_limit_mib=limits.memory_limit_mib or 0, max_concurrency=limits.max_concurrency,
                max_queue=limits.max_queue, scratch_mib=limits.scratch_mib, max_processes=limits.max_processes,
                network=limits.network))
    if view.discovery is not None:
        message.tasks.extend(pb.Task(id=t.id, function=t.function, dependencies=t.dependencies,
                                     is_async=t.is_async, docstring=t.docstring, workflow=t.workflow)
                             for t in view.discovery.tasks)
        message.workflows.extend(pb.Workflow(name=w.name, description=w.description, tasks=w.tasks)
                                 for w in view.discovery.workflows)
    return message


def log_entry_message(entry: LogEntry, redact: Redact = no_redaction) -> pb.PackageLogEntry:
    message = pb.PackageLogEntry(seq=entry.seq, time=entry.time, version=entry.version,
                                 incarnation=entry.incarnation, text=redact(entry.text),
                                 kind=pb.PackageLogEntry.OUTPUT if entry.kind == OUTPUT else pb.PackageLogEntry.EVENT)
    if entry.event is not None:
        message.event = entry.event.kind.value
        message.cause = entry.event.cause
        message.pid = entry.event.pid
        message.memory_peak_bytes = entry.event.memory_peak_bytes
    return message


def call_message(result: CallResult, redact: Redact = no_redaction) -> pb.CallTaskResponse:
    message = pb.CallTaskResponse(
        status=_STATUSES[result.status.lower()], duration_ms=result.duration_ms,
        output=pb.CapturedOutput(stdout=redact(result.output.stdout), stderr=redact(result.output.stderr),
                                 stdout_dropped_bytes=result.output.stdout_dropped_bytes,
                                 stderr_dropped_bytes=result.output.stderr_dropped_bytes))
    if result.context_json is not None:
        message.context_json = result.context_json  # the sandbox's bytes, untouched
    if result.error is not None:
        message.error.CopyFrom(error_message(result.error, redact))
    return message


def outcome_message(outcome: TaskOutcome, redact: Redact = no_redaction) -> pb.TaskOutcome:
    message = pb.TaskOutcome(task_id=outcome.task_id, status=_STATUSES[outcome.status.lower()],
                             attempts=outcome.attempts, duration_ms=outcome.duration_ms,
                             skip_reason=outcome.skip_reason)
    if outcome.error is not None:
        message.error.CopyFrom(error_message(outcome.error, redact))
    return message


def run_message(run_id: str, run: WorkflowRun, redact: Redact = no_redaction) -> pb.RunWorkflowResponse:
    return pb.RunWorkflowResponse(status=_STATUSES[run.status.lower()], workflow=run.workflow,
                                  final_context_json=run.final_context.to_json().encode(),
                                  tasks=[outcome_message(o, redact) for o in run.tasks.values()],
                                  duration_ms=run.duration_ms, run_id=run_id)


def run_record_message(record: RunRecord, redact: Redact = no_redaction) -> pb.WorkflowRunRecord:
    return pb.WorkflowRunRecord(run_id=record.id, package=record.package, workflow=record.workflow,
                                origin=record.origin, status=record.status, started_at=record.started_at,
                                finished_at=record.finished_at or 0.0, duration_ms=record.duration_ms or 0.0,
                                error=redact(record.error or ""))


def schedule_message(view: ScheduleView) -> pb.Schedule:
    schedule = view.schedule
    return pb.Schedule(
        id=schedule.id, package=schedule.package, trigger=schedule.name, workflow=schedule.workflow,
        kind=pb.Schedule.CRON if schedule.kind is ScheduleKind.CRON else pb.Schedule.POLL,
        cron=schedule.cron_expression or "", timezone=schedule.timezone if schedule.cron_expression else "",
        poll_interval_ms=schedule.poll_interval_ms or 0, allow_concurrent=schedule.allow_concurrent,
        enabled=schedule.enabled, next_fire_at=view.next_fire_at or 0.0, last_fire_at=schedule.last_run_at or 0.0,
        last_poll_at=view.last_poll_at or 0.0, running=view.running, catchup_policy=schedule.catchup_policy)


def schedule_run_message(execution: Execution, redact: Redact = no_redaction) -> pb.ScheduleRun:
    return pb.ScheduleRun(id=execution.id, schedule_id=execution.schedule_id, outcome=execution.outcome.value,
                          scheduled_at=execution.scheduled_time or 0.0, started_at=execution.started_at or 0.0,
                          finished_at=execution.completed_at or 0.0, run_id=execution.run_id or "",
                          error=redact(execution.error or ""), context_hash=execution.context_hash or "")


class SupervisorService(supervisor_pb2_grpc.SupervisorServicer):
    def __init__(self, host: PackageHost, auth: Authenticator, quotas: TenantQuotas, max_archive_bytes: int,
                 upload_idle_timeout: float, metrics: ServiceMetrics | None = None,
                 redact: Redact = no_redaction) -> None:
        self.host = host
        self.redact = redact
        self.metrics = metrics
        self.auth = auth
        self.quotas = quotas
        self.max_archive_bytes = max_archive_bytes
        self.upload_idle_timeout = upload_idle_timeout

    # --- request plumbing ------------------------------------------------------------

    async def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata() or ())
        tenant = self.auth.tenant_for(metadata.get("authorization"))
        if tenant is None:
            if self.metrics is not None:
                self.metrics.unauthenticated_request()
            missing = "authorization" not in metadata
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "this server needs an API key: send 'authorization: Bearer KEY' metadata"
                                if missing else "the API key is not valid")
        return tenant  # type: ignore[return-value]

    @asynccontextmanager
    async def _request(self, context: grpc.aio.ServicerContext, method: str,
                       kind: str = "request") -> AsyncIterator[str]:
        """Authenticate, admit under the tenant's quota, turn refusals into status codes, and count."""
        tenant = await self._tenant(context)
        try:
            with self.quotas.admit(tenant, kind):
                yield tenant
        except QuotaExceeded as exc:
            if self.metrics is not None:
                self.metrics.quota_refused(tenant, kind)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.redact(str(exc)))
        except CallRejected as exc:
            await context.abort(_REJECTIONS.get(exc.code, grpc.StatusCode.FAILED_PRECONDITION), self.redact(str(exc)))
        except VersionConflictError as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, self.redact(str(exc)))
        except RegistryUnavailable as exc:
            log.error("%s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the package registry is unavailable; try again shortly")
        except PackageError as exc:
            detail = getattr(exc, "traceback", "")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, self.redact(
                f"package refused [{exc.code}]: {exc}" + (f"\n{detail}" if detail else "")))
        finally:
            if self.metrics is not None:
                code = context.code()
                self.metrics.request_finished(tenant, method, code.name if code is not None else "OK")

    @staticmethod
    async def _package_name(tenant: str, reference: str, context: grpc.aio.ServicerContext) -> str:
        """A package reference is NAME or TENANT/NAME; another tenant's is refused."""
        if not reference:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request names no package")
        owner, _, name = reference.rpartition("/")
        if owner and owner != tenant:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                f"package {reference!r} belongs to another tenant; your key is for tenant {tenant!r}")
        return name

    @staticmethod
    async def _deadline(request: pb.CallTaskRequest, context: grpc.aio.ServicerContext) -> float | None:
        """The least of the client's deadline and timeout_seconds (the package's call timeout applies too)."""
        timeout = None
        if request.HasField("timeout_seconds"):
            timeout = request.timeout_seconds
            if math.isnan(timeout) or math.isinf(timeout) or timeout <= 0:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"timeout_seconds must be a positive, finite number of seconds, not {timeout!r}")
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = remaining if timeout is None else min(timeout, remaining)
        return timeout

    # --- methods -------------------------------------------------------------------

    async def UploadPackage(self, request_iterator: AsyncIterator[pb.UploadPackageRequest],
                            context: grpc.aio.ServicerContext) -> pb.Package:
        started = time.perf_counter()
        try:
            return await self._upload(request_iterator, context)
        finally:
            if self.metrics is not None:
                code = context.code()
                tenant = self.auth.tenant_for(dict(context.invocation_metadata() or ()).get("authorization"))
                if tenant is not None:
                    self.metrics.upload_finished(tenant, code.name if code is not None else "OK",
                                                 time.perf_counter() - started)

    async def _upload(self, request_iterator: AsyncIterator[pb.UploadPackageRequest],
                      context: grpc.aio.ServicerContext) -> pb.Package:
        async with self._request(context, "UploadPackage", "upload") as tenant:
            fd, name = tempfile.mkstemp(prefix=PARTIAL_UPLOAD_PREFIX, dir=self.host.data_dir)
            path = Path(name)
            try:
                size = 0
                chunks = request_iterator.__aiter__()
                with os.fdopen(fd, "wb") as out:
                    while True:
                        try:
                            request = await asyncio.wait_for(chunks.__anext__(), self.upload_idle_timeout)
                        except StopAsyncIteration:
                            break
                        except asyncio.TimeoutError:
                            await _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                                         f"the upload stalled: no data for {self.upload_idle_timeout:g}s")
                        size += len(request.chunk)
                        if size > self.max_archive_bytes:
                            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                         f"the archive is over the {self.max_archive_bytes} byte upload limit")
                        out.write(request.chunk)
                if size == 0:
                    await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the upload held no bytes")
                view = await self.host.upload(tenant, path)
                log.info("tenant %s uploaded %s %s", tenant, view.name, view.version)
                return package_message(view, self.redact)
            finally:
                path.unlink(missing_ok=True)

    async def UnloadPackage(self, request: pb.UnloadPackageRequest,
                            context: grpc.aio.ServicerContext) -> pb.UnloadPackageResponse:
        async with self._request(context, "UnloadPackage") as tenant:
            name = await self._package_name(tenant, request.package, context)
            await self.host.unload(tenant, name)
            log.info("tenant %s unloaded %s", tenant, name)
        return pb.UnloadPackageResponse()

    async def ListPackages(self, request: pb.ListPackagesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListPackagesResponse:
        async with self._request(context, "ListPackages") as tenant:
            return pb.ListPackagesResponse(packages=[package_message(view, self.redact) for view in self.host.list(tenant)])

    async def GetPackage(self, request: pb.GetPackageRequest, context: grpc.aio.ServicerContext) -> pb.Package:
        async with self._request(context, "GetPackage") as tenant:
            name = await self._package_name(tenant, request.package, context)
            return package_message(self.host.get(tenant, name), self.redact)

    async def ListTasks(self, request: pb.ListTasksRequest, context: grpc.aio.ServicerContext) -> pb.ListTasksResponse:
        async with self._request(context, "ListTasks") as tenant:
            name = await self._package_name(tenant, request.package, context)
            message = package_message(self.host.get(tenant, name), self.redact)
        return pb.ListTasksResponse(tasks=message.tasks, workflows=message.workflows)

    async def CallTask(self, request: pb.CallTaskRequest, context: grpc.aio.ServicerContext) -> pb.CallTaskResponse:
        async with self._request(context, "CallTask") as tenant:
            name = await self._package_name(tenant, request.package, context)
            if not request.task:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the request names no task")
            timeout = await self._deadline(request, context)
            result = await self.host.call(tenant, name, request.task, request.context_json or b"{}", timeout)
            return call_message(result, self.redact)

    async def RunWorkflow(self, request: pb.RunWorkflowRequest,
                          context: grpc.aio.ServicerContext) -> pb.RunWorkflowResponse:
        async with self._request(context, "RunWorkflow") as tenant:
            name = await self._package_name(tenant, request.package, context)
            run_id, run = await self.host.run_workflow(tenant, name, request.workflow or None,
                                                       request.context_json or b"{}")
            return run_message(run_id, run, self.redact)

    async def ListWorkflowRuns(self, request: pb.ListWorkflowRunsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListWorkflowRunsResponse:
        async with self._request(context, "ListWorkflowRuns") as tenant:
            name = await self._package_name(tenant, request.package, context) if request.package else None
            records = await self.host.workflow_runs(tenant, name, request.limit or 100, request.offset)
            return pb.ListWorkflowRunsResponse(runs=[run_record_message(record, self.redact) for record in records])

    async def ListSchedules(self, request: pb.ListSchedulesRequest,
                            context: grpc.aio.ServicerContext) -> pb.ListSchedulesResponse:
        async with self._request(context, "ListSchedules") as tenant:
            name = await self._package_name(tenant, request.package, context) if request.package else None
            views = await self.host.schedules.list(tenant, name)
            return pb.ListSchedulesResponse(schedules=[schedule_message(view) for view in views])

    async def PauseSchedule(self, request: pb.ScheduleRequest, context: grpc.aio.ServicerContext) -> pb.Schedule:
        return await self._set_enabled(request, context, False)

    async def ResumeSchedule(self, request: pb.ScheduleRequest, context: grpc.aio.ServicerContext) -> pb.Schedule:
        return await self._set_enabled(request, context, True)

    async def _set_enabled(self, request: pb.ScheduleRequest, context: grpc.aio.ServicerContext,
                           enabled: bool) -> pb.Schedule:
        async with self._request(context, "ResumeSchedule" if enabled else "PauseSchedule") as tenant:
            try:
                view = await self.host.schedules.set_enabled(tenant, request.schedule_id, enabled)
            except UnknownScheduleError as exc:
                await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
            log.info("tenant %s %s schedule %s", tenant, "resumed" if enabled else "paused", request.schedule_id)
            return schedule_message(view)

    async def ListScheduleRuns(self, request: pb.ListScheduleRunsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListScheduleRunsResponse:
        async with self._request(context, "ListScheduleRuns") as tenant:
            try:
                executions = await self.host.schedules.executions(tenant, request.schedule_id, request.limit or 100,
                                                                  request.offset)
            except UnknownScheduleError as exc:
                await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
            return pb.ListScheduleRunsResponse(runs=[schedule_run_message(e, self.redact) for e in executions])

    async def ReadPackageLog(self, request: pb.ReadPackageLogRequest, context: grpc.aio.ServicerContext) -> None:
        async with self._request(context, "ReadPackageLog") as tenant:
            name = await self._package_name(tenant, request.package, context)
            package_log = self.host.log(tenant, name)
            after = request.after
            while True:
                for entry in package_log.entries(after):
                    await context.write(log_entry_message(entry, self.redact))
                    after = entry.seq
                if not request.follow or package_log.closed:
                    return
                await package_log.wait(after)


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable")  # abort raises
