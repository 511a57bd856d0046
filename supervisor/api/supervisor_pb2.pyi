from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    COMPLETED: _ClassVar[Status]
    FAILED: _ClassVar[Status]
    SKIPPED: _ClassVar[Status]
STATUS_UNSPECIFIED: Status
COMPLETED: Status
FAILED: Status
SKIPPED: Status

class UploadPackageRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class Package(_message.Message):
    __slots__ = ("name", "version", "state", "error", "tasks", "workflows", "pid", "restarts", "memory_bytes", "fingerprint", "source", "isolation", "memory_peak_bytes", "restart_causes", "limits", "sandbox_state")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Package.State]
        LOADING: _ClassVar[Package.State]
        READY: _ClassVar[Package.State]
        FAILED: _ClassVar[Package.State]
    STATE_UNSPECIFIED: Package.State
    LOADING: Package.State
    READY: Package.State
    FAILED: Package.State
    class IsolationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class RestartCausesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESTART_CAUSES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    state: Package.State
    error: str
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    pid: int
    restarts: int
    memory_bytes: int
    fingerprint: str
    source: str
    isolation: _containers.ScalarMap[str, str]
    memory_peak_bytes: int
    restart_causes: _containers.ScalarMap[str, int]
    limits: Limits
    sandbox_state: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[_Union[Package.State, str]] = ..., error: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., pid: _Optional[int] = ..., restarts: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., fingerprint: _Optional[str] = ..., source: _Optional[str] = ..., isolation: _Optional[_Mapping[str, str]] = ..., memory_peak_bytes: _Optional[int] = ..., restart_causes: _Optional[_Mapping[str, int]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., sandbox_state: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("import_timeout_seconds", "call_timeout_seconds", "memory_limit_mib", "max_concurrency", "max_queue", "scratch_mib", "max_processes", "network")
    IMPORT_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CALL_TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_MIB_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    SCRATCH_MIB_FIELD_NUMBER: _ClassVar[int]
    MAX_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    import_timeout_seconds: float
    call_timeout_seconds: float
    memory_limit_mib: int
    max_concurrency: int
    max_queue: int
    scratch_mib: int
    max_processes: int
    network: bool
    def __init__(self, import_timeout_seconds: _Optional[float] = ..., call_timeout_seconds: _Optional[float] = ..., memory_limit_mib: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., max_queue: _Optional[int] = ..., scratch_mib: _Optional[int] = ..., max_processes: _Optional[int] = ..., network: _Optional[bool] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "function", "dependencies", "is_async", "docstring", "workflow")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    IS_ASYNC_FIELD_NUMBER: _ClassVar[int]
    DOCSTRING_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    id: str
    function: str
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    is_async: bool
    docstring: str
    workflow: str
    def __init__(self, id: _Optional[str] = ..., function: _Optional[str] = ..., dependencies: _Optional[_Iterable[str]] = ..., is_async: _Optional[bool] = ..., docstring: _Optional[str] = ..., workflow: _Optional[str] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("name", "description", "tasks")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class UnloadPackageRequest(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: str
    def __init__(self, package: _Optional[str] = ...) -> None: ...

class UnloadPackageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPackagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPackagesResponse(_message.Message):
    __slots__ = ("packages",)
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    packages: _containers.RepeatedCompositeFieldContainer[Package]
    def __init__(self, packages: _Optional[_Iterable[_Union[Package, _Mapping]]] = ...) -> None: ...

class GetPackageRequest(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: str
    def __init__(self, package: _Optional[str] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: str
    def __init__(self, package: _Optional[str] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "workflows")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("file", "line", "function")
    FILE_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    file: str
    line: int
    function: str
    def __init__(self, file: _Optional[str] = ..., line: _Optional[int] = ..., function: _Optional[str] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("kind", "type", "message", "traceback", "frames")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    type: str
    message: str
    traceback: str
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, kind: _Optional[str] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...

class CapturedOutput(_message.Message):
    __slots__ = ("stdout", "stderr", "stdout_dropped_bytes", "stderr_dropped_bytes")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDOUT_DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STDERR_DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    stdout: str
    stderr: str
    stdout_dropped_bytes: int
    stderr_dropped_bytes: int
    def __init__(self, stdout: _Optional[str] = ..., stderr: _Optional[str] = ..., stdout_dropped_bytes: _Optional[int] = ..., stderr_dropped_bytes: _Optional[int] = ...) -> None: ...

class CallTaskRequest(_message.Message):
    __slots__ = ("package", "task", "context_json", "timeout_seconds")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    package: str
    task: str
    context_json: bytes
    timeout_seconds: float
    def __init__(self, package: _Optional[str] = ..., task: _Optional[str] = ..., context_json: _Optional[bytes] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class CallTaskResponse(_message.Message):
    __slots__ = ("status", "context_json", "error", "output", "duration_ms")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    context_json: bytes
    error: TaskError
    output: CapturedOutput
    duration_ms: float
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., context_json: _Optional[bytes] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., output: _Optional[_Union[CapturedOutput, _Mapping]] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class RunWorkflowRequest(_message.Message):
    __slots__ = ("package", "workflow", "context_json")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    package: str
    workflow: str
    context_json: bytes
    def __init__(self, package: _Optional[str] = ..., workflow: _Optional[str] = ..., context_json: _Optional[bytes] = ...) -> None: ...

class TaskOutcome(_message.Message):
    __slots__ = ("task_id", "status", "attempts", "duration_ms", "error", "skip_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: Status
    attempts: int
    duration_ms: float
    error: TaskError
    skip_reason: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[Status, str]] = ..., attempts: _Optional[int] = ..., duration_ms: _Optional[float] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., skip_reason: _Optional[str] = ...) -> None: ...

class ReadPackageLogRequest(_message.Message):
    __slots__ = ("package", "after", "follow")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    package: str
    after: int
    follow: bool
    def __init__(self, package: _Optional[str] = ..., after: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class PackageLogEntry(_message.Message):
    __slots__ = ("seq", "time", "kind", "version", "incarnation", "text", "event", "cause", "pid", "memory_peak_bytes")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[PackageLogEntry.Kind]
        OUTPUT: _ClassVar[PackageLogEntry.Kind]
        EVENT: _ClassVar[PackageLogEntry.Kind]
    KIND_UNSPECIFIED: PackageLogEntry.Kind
    OUTPUT: PackageLogEntry.Kind
    EVENT: PackageLogEntry.Kind
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    kind: PackageLogEntry.Kind
    version: str
    incarnation: int
    text: str
    event: str
    cause: str
    pid: int
    memory_peak_bytes: int
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., kind: _Optional[_Union[PackageLogEntry.Kind, str]] = ..., version: _Optional[str] = ..., incarnation: _Optional[int] = ..., text: _Optional[str] = ..., event: _Optional[str] = ..., cause: _Optional[str] = ..., pid: _Optional[int] = ..., memory_peak_bytes: _Optional[int] = ...) -> None: ...

class RunWorkflowResponse(_message.Message):
    __slots__ = ("status", "workflow", "final_context_json", "tasks", "duration_ms", "run_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    FINAL_CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    status: Status
    workflow: str
    final_context_json: bytes
    tasks: _containers.RepeatedCompositeFieldContainer[TaskOutcome]
    duration_ms: float
    run_id: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., workflow: _Optional[str] = ..., final_context_json: _Optional[bytes] = ..., tasks: _Optional[_Iterable[_Union[TaskOutcome, _Mapping]]] = ..., duration_ms: _Optional[float] = ..., run_id: _Optional[str] = ...) -> None: ...

class ListWorkflowRunsRequest(_message.Message):
    __slots__ = ("package", "limit", "offset")
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    package: str
    limit: int
    offset: int
    def __init__(self, package: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class WorkflowRunRecord(_message.Message):
    __slots__ = ("run_id", "package", "workflow", "origin", "status", "started_at", "finished_at", "duration_ms", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    package: str
    workflow: str
    origin: str
    status: str
    started_at: float
    finished_at: float
    duration_ms: float
    error: str
    def __init__(self, run_id: _Optional[str] = ..., package: _Optional[str] = ..., workflow: _Optional[str] = ..., origin: _Optional[str] = ..., status: _Optional[str] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., duration_ms: _Optional[float] = ..., error: _Optional[str] = ...) -> None: ...

class ListWorkflowRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[WorkflowRunRecord]
    def __init__(self, runs: _Optional[_Iterable[_Union[WorkflowRunRecord, _Mapping]]] = ...) -> None: ...

class Schedule(_message.Message):
    __slots__ = ("id", "package", "trigger", "workflow", "kind", "cron", "timezone", "poll_interval_ms", "allow_concurrent", "enabled", "next_fire_at", "last_fire_at", "last_poll_at", "running", "catchup_policy")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Schedule.Kind]
        CRON: _ClassVar[Schedule.Kind]
        POLL: _ClassVar[Schedule.Kind]
    KIND_UNSPECIFIED: Schedule.Kind
    CRON: Schedule.Kind
    POLL: Schedule.Kind
    ID_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    POLL_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRE_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_POLL_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_POLICY_FIELD_NUMBER: _ClassVar[int]
    id: str
    package: str
    trigger: str
    workflow: str
    kind: Schedule.Kind
    cron: str
    timezone: str
    poll_interval_ms: int
    allow_concurrent: bool
    enabled: bool
    next_fire_at: float
    last_fire_at: float
    last_poll_at: float
    running: int
    catchup_policy: str
    def __init__(self, id: _Optional[str] = ..., package: _Optional[str] = ..., trigger: _Optional[str] = ..., workflow: _Optional[str] = ..., kind: _Optional[_Union[Schedule.Kind, str]] = ..., cron: _Optional[str] = ..., timezone: _Optional[str] = ..., poll_interval_ms: _Optional[int] = ..., allow_concurrent: _Optional[bool] = ..., enabled: _Optional[bool] = ..., next_fire_at: _Optional[float] = ..., last_fire_at: _Optional[float] = ..., last_poll_at: _Optional[float] = ..., running: _Optional[int] = ..., catchup_policy: _Optional[str] = ...) -> None: ...

class ListSchedulesRequest(_message.Message):
    __slots__ = ("package",)
    PACKAGE_FIELD_NUMBER: _ClassVar[int]
    package: str
    def __init__(self, package: _Optional[str] = ...) -> None: ...

class ListSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[Schedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[Schedule, _Mapping]]] = ...) -> None: ...

class ScheduleRequest(_message.Message):
    __slots__ = ("schedule_id",)
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    def __init__(self, schedule_id: _Optional[str] = ...) -> None: ...

class ListScheduleRunsRequest(_message.Message):
    __slots__ = ("schedule_id", "limit", "offset")
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    limit: int
    offset: int
    def __init__(self, schedule_id: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ScheduleRun(_message.Message):
    __slots__ = ("id", "schedule_id", "outcome", "scheduled_at", "started_at", "finished_at", "run_id", "error", "context_hash")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_HASH_FIELD_NUMBER: _ClassVar[int]
    id: str
    schedule_id: str
    outcome: str
    scheduled_at: float
    started_at: float
    finished_at: float
    run_id: str
    error: str
    context_hash: str
    def __init__(self, id: _Optional[str] = ..., schedule_id: _Optional[str] = ..., outcome: _Optional[str] = ..., scheduled_at: _Optional[float] = ..., started_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., run_id: _Optional[str] = ..., error: _Optional[str] = ..., context_hash: _Optional[str] = ...) -> None: ...

class ListScheduleRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[ScheduleRun]
    def __init__(self, runs: _Optional[_Iterable[_Union[ScheduleRun, _Mapping]]] = ...) -> None: ...
