"""The public gRPC service, cloaca.sandbox.v1.Supervisor, over a PackageHost.

This module only translates: requests to host calls, results to messages,
and refusals to gRPC status codes with a message a person can act on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc

from cloaca.engine import TaskOutcome, WorkflowRun
from cloaca.errors import TaskError
from supervisor.api import supervisor_pb2 as pb
from supervisor.api import supervisor_pb2_grpc
from supervisor.auth import Authenticator
from supervisor.errors import PackageError
from supervisor.host import FAILED, LOADING, READY, PackageHost, PackageView
from supervisor.registry import VersionConflictError
from supervisor.results import CallRejected, CallResult

log = logging.getLogger(__name__)

_STATES = {LOADING: pb.Package.LOADING, READY: pb.Package.READY, FAILED: pb.Package.FAILED}
_STATUSES = {"completed": pb.COMPLETED, "failed": pb.FAILED, "skipped": pb.SKIPPED}
_REJECTIONS = {
    "not_found": grpc.StatusCode.NOT_FOUND,
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def error_message(error: TaskError | None) -> pb.TaskError | None:
    if error is None:
        return None
    return pb.TaskError(kind=error.kind, type=error.type, message=error.message, traceback=error.traceback,
                        frames=[pb.Frame(file=f.file, line=f.line, function=f.function) for f in error.frames])


def package_message(view: PackageView) -> pb.Package:
    message = pb.Package(name=view.name, version=view.version, state=_STATES[view.state], error=view.error,
                         source=view.source)
    if view.info is not None:
        message.pid = view.info.pid or 0
        message.restarts = view.info.restarts
        message.memory_bytes = view.info.memory_bytes
        message.fingerprint = view.info.fingerprint
    if view.discovery is not None:
        message.tasks.extend(pb.Task(id=t.id, function=t.function, dependencies=t.dependencies,
                                     is_async=t.is_async, docstring=t.docstring, workflow=t.workflow)
                             for t in view.discovery.tasks)
        message.workflows.extend(pb.Workflow(name=w.name, description=w.description, tasks=w.tasks)
                                 for w in view.discovery.workflows)
    return message


def call_message(result: CallResult) -> pb.CallTaskResponse:
    message = pb.CallTaskResponse(
        status=_STATUSES[result.status.lower()], duration_ms=result.duration_ms,
        output=pb.CapturedOutput(stdout=result.output.stdout, stderr=result.output.stderr,
                                 stdout_dropped_bytes=result.output.stdout_dropped_bytes,
                                 stderr_dropped_bytes=result.output.stderr_dropped_bytes))
    if result.context is not None:
        message.context_json = json.dumps(result.context).encode()
    if result.error is not None:
        message.error.CopyFrom(error_message(result.error))
    return message


def outcome_message(outcome: TaskOutcome) -> pb.TaskOutcome:
    message = pb.TaskOutcome(task_id=outcome.task_id, status=_STATUSES[outcome.status.lower()],
                             attempts=outcome.attempts, duration_ms=outcome.duration_ms,
                             skip_reason=outcome.skip_reason)
    if outcome.error is not None:
        message.error.CopyFrom(error_message(outcome.error))
    return message


def run_message(run: WorkflowRun) -> pb.RunWorkflowResponse:
    return pb.RunWorkflowResponse(status=_STATUSES[run.status.lower()], workflow=run.workflow,
                                  final_context_json=run.final_context.to_json().encode(),
                                  tasks=[outcome_message(o) for o in run.tasks.values()],
                                  duration_ms=run.duration_ms)


class SupervisorService(supervisor_pb2_grpc.SupervisorServicer):
    def __init__(self, host: PackageHost, auth: Authenticator, max_archive_bytes: int) -> None:
        self.host = host
        self.auth = auth
        self.max_archive_bytes = max_archive_bytes

    # --- request plumbing --------------------------------------------------------

    def _tenant(self, context: grpc.ServicerContext) -> str:
        metadata = dict(context.invocation_metadata())
        tenant = self.auth.tenant_for(metadata.get("authorization"))
        if tenant is None:
            missing = "authorization" not in metadata
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "this server needs an API key: send 'authorization: Bearer KEY' metadata"
                          if missing else "the API key is not valid")
        return tenant  # type: ignore[return-value]

    def _package_name(self, tenant: str, reference: str, context: grpc.ServicerContext) -> str:
        """A package reference is NAME or TENANT/NAME; another tenant's is refused."""
        if not reference:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request names no package")
        owner, _, name = reference.rpartition("/")
        if owner and owner != tenant:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"package {reference!r} belongs to another tenant; your key is for tenant {tenant!r}")
        return name

    @contextmanager
    def _answering(self, context: grpc.ServicerContext) -> Iterator[None]:
        """Turn refusals into status codes; anything unexpected into INTERNAL, logged."""
        try:
            yield
        except CallRejected as exc:
            context.abort(_REJECTIONS.get(exc.code, grpc.StatusCode.FAILED_PRECONDITION), str(exc))
        except VersionConflictError as exc:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except PackageError as exc:
            detail = getattr(exc, "traceback", "")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"package refused [{exc.code}]: {exc}" + (f"\n{detail}" if detail else ""))

    @staticmethod
    def _context_bytes(raw: bytes) -> bytes:
        return raw if raw else b"{}"

    # --- methods -----------------------------------------------------------------

    def UploadPackage(self, request_iterator: Iterator[pb.UploadPackageRequest],
                      context: grpc.ServicerContext) -> pb.Package:
        tenant = self._tenant(context)
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=self.host.data_dir)
        path = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                for request in request_iterator:
                    size += len(request.chunk)
                    if size > self.max_archive_bytes:
                        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      f"the archive is over the {self.max_archive_bytes} byte upload limit")
                    out.write(request.chunk)
            if size == 0:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the upload held no bytes")
            with self._answering(context):
                view = self.host.upload(tenant, path)
                log.info("tenant %s uploaded %s %s", tenant, view.name, view.version)
                return package_message(view)
        finally:
            path.unlink(missing_ok=True)

    def UnloadPackage(self, request: pb.UnloadPackageRequest, context: grpc.ServicerContext) -> pb.UnloadPackageResponse:
        tenant = self._tenant(context)
        name = self._package_name(tenant, request.package, context)
        with self._answering(context):
            self.host.unload(tenant, name)
            log.info("tenant %s unloaded %s", tenant, name)
        return pb.UnloadPackageResponse()

    def ListPackages(self, request: pb.ListPackagesRequest, context: grpc.ServicerContext) -> pb.ListPackagesResponse:
        tenant = self._tenant(context)
        return pb.ListPackagesResponse(packages=[package_message(view) for view in self.host.list(tenant)])

    def GetPackage(self, request: pb.GetPackageRequest, context: grpc.ServicerContext) -> pb.Package:
        tenant = self._tenant(context)
        name = self._package_name(tenant, request.package, context)
        with self._answering(context):
            return package_message(self.host.get(tenant, name))

    def ListTasks(self, request: pb.ListTasksRequest, context: grpc.ServicerContext) -> pb.ListTasksResponse:
        tenant = self._tenant(context)
        name = self._package_name(tenant, request.package, context)
        with self._answering(context):
            message = package_message(self.host.get(tenant, name))
        return pb.ListTasksResponse(tasks=message.tasks, workflows=message.workflows)

    def CallTask(self, request: pb.CallTaskRequest, context: grpc.ServicerContext) -> pb.CallTaskResponse:
        tenant = self._tenant(context)
        name = self._package_name(tenant, request.package, context)
        if not request.task:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the request names no task")
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        if timeout is not None and timeout <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds must be positive")
        with self._answering(context):
            result = self.host.call(tenant, name, request.task, self._context_bytes(request.context_json), timeout)
        return call_message(result)

    def RunWorkflow(self, request: pb.RunWorkflowRequest, context: grpc.ServicerContext) -> pb.RunWorkflowResponse:
        tenant = self._tenant(context)
        name = self._package_name(tenant, request.package, context)
        with self._answering(context):
            run = self.host.run_workflow(tenant, name, request.workflow or None,
                                         self._context_bytes(request.context_json))
        return run_message(run)
