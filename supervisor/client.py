"""A small Python client for the public API (the CLI's client commands use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import grpc

from supervisor.api import supervisor_pb2 as pb
from supervisor.api import supervisor_pb2_grpc
from supervisor.balancing import channel_options, channel_target

CHUNK_BYTES = 1024 * 1024
MESSAGE_LIMIT = 65 * 1024 * 1024


class SupervisorClient:
    def __init__(self, server: str, api_key: str | None = None, tls_ca: Path | None = None) -> None:
        """`server`: one HOST:PORT, several comma-separated, or a gRPC target such as dns:///NAME:PORT;
        calls are spread round-robin over every address that answers (supervisor.balancing)."""
        options = [("grpc.max_receive_message_length", MESSAGE_LIMIT),
                   ("grpc.max_send_message_length", MESSAGE_LIMIT), *channel_options(server)]
        target = channel_target(server)
        if tls_ca is not None:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(tls_ca.read_bytes()), options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = supervisor_pb2_grpc.SupervisorStub(self.channel)
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def upload(self, archive: Path, timeout: float | None = None) -> pb.Package:
        """Stream the archive; an archive that cannot be read raises OSError before anything is sent."""
        handle = open(archive, "rb")  # here, not in the stream: gRPC would hide why it failed

        def chunks() -> Iterator[pb.UploadPackageRequest]:
            while block := handle.read(CHUNK_BYTES):
                yield pb.UploadPackageRequest(chunk=block)

        with handle:
            return self.stub.UploadPackage(chunks(), metadata=self.metadata, timeout=timeout)

    def unload(self, package: str) -> None:
        self.stub.UnloadPackage(pb.UnloadPackageRequest(package=package), metadata=self.metadata)

    def list(self) -> list[pb.Package]:
        return list(self.stub.ListPackages(pb.ListPackagesRequest(), metadata=self.metadata).packages)

    def get(self, package: str) -> pb.Package:
        return self.stub.GetPackage(pb.GetPackageRequest(package=package), metadata=self.metadata)

    def tasks(self, package: str) -> pb.ListTasksResponse:
        return self.stub.ListTasks(pb.ListTasksRequest(package=package), metadata=self.metadata)

    def call(self, package: str, task: str, context: dict[str, Any] | bytes | None = None,
             timeout: float | None = None) -> pb.CallTaskResponse:
        request = pb.CallTaskRequest(package=package, task=task, context_json=_json_bytes(context))
        if timeout is not None:
            request.timeout_seconds = timeout
        return self.stub.CallTask(request, metadata=self.metadata)

    def run(self, package: str, workflow: str | None = None,
            context: dict[str, Any] | bytes | None = None) -> pb.RunWorkflowResponse:
        request = pb.RunWorkflowRequest(package=package, workflow=workflow or "", context_json=_json_bytes(context))
        return self.stub.RunWorkflow(request, metadata=self.metadata)

    def runs(self, package: str | None = None, limit: int = 100, offset: int = 0) -> list[pb.WorkflowRunRecord]:
        request = pb.ListWorkflowRunsRequest(package=package or "", limit=limit, offset=offset)
        return list(self.stub.ListWorkflowRuns(request, metadata=self.metadata).runs)

    def schedules(self, package: str | None = None) -> list[pb.Schedule]:
        request = pb.ListSchedulesRequest(package=package or "")
        return list(self.stub.ListSchedules(request, metadata=self.metadata).schedules)

    def pause_schedule(self, schedule_id: str) -> pb.Schedule:
        return self.stub.PauseSchedule(pb.ScheduleRequest(schedule_id=schedule_id), metadata=self.metadata)

    def resume_schedule(self, schedule_id: str) -> pb.Schedule:
        return self.stub.ResumeSchedule(pb.ScheduleRequest(schedule_id=schedule_id), metadata=self.metadata)

    def schedule_runs(self, schedule_id: str, limit: int = 100, offset: int = 0) -> list[pb.ScheduleRun]:
        request = pb.ListScheduleRunsRequest(schedule_id=schedule_id, limit=limit, offset=offset)
        return list(self.stub.ListScheduleRuns(request, metadata=self.metadata).runs)
    def logs(self, package: str, after: int = 0, follow: bool = False) -> Iterator[pb.PackageLogEntry]:
        """The package's recent output and lifecycle events; with `follow`, new ones as they come."""
        request = pb.ReadPackageLogRequest(package=package, after=after, follow=follow)
        return iter(self.stub.ReadPackageLog(request, metadata=self.metadata))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "SupervisorClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _json_bytes(context: dict[str, Any] | bytes | None) -> bytes:
    if context is None:
        return b""
    if isinstance(context, bytes):
        return context
    return json.dumps(context).encode()
