from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Progress(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANSWER: _ClassVar[Progress]
    DEFERRED: _ClassVar[Progress]
    WANTS_SLOT: _ClassVar[Progress]
ANSWER: Progress
DEFERRED: Progress
WANTS_SLOT: Progress

class SecretFields(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.ScalarMap[str, str]
    def __init__(self, fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Secrets(_message.Message):
    __slots__ = ("secrets", "declared")
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SecretFields
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SecretFields, _Mapping]] = ...) -> None: ...
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.MessageMap[str, SecretFields]
    declared: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, secrets: _Optional[_Mapping[str, SecretFields]] = ..., declared: _Optional[_Iterable[str]] = ...) -> None: ...

class SecretsAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiscoverRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DiscoverResponse(_message.Message):
    __slots__ = ("ok", "discovery", "error", "pid", "isolation")
    class IsolationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OK_FIELD_NUMBER: _ClassVar[int]
    DISCOVERY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    discovery: Discovery
    error: TaskError
    pid: int
    isolation: _containers.ScalarMap[str, str]
    def __init__(self, ok: _Optional[bool] = ..., discovery: _Optional[_Union[Discovery, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., pid: _Optional[int] = ..., isolation: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Discovery(_message.Message):
    __slots__ = ("tasks", "workflows", "triggers", "problems", "package_workflow", "secrets")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    workflows: _containers.RepeatedCompositeFieldContainer[Workflow]
    triggers: _containers.RepeatedCompositeFieldContainer[Trigger]
    problems: _containers.RepeatedCompositeFieldContainer[Problem]
    package_workflow: str
    secrets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., workflows: _Optional[_Iterable[_Union[Workflow, _Mapping]]] = ..., triggers: _Optional[_Iterable[_Union[Trigger, _Mapping]]] = ..., problems: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., package_workflow: _Optional[str] = ..., secrets: _Optional[_Iterable[str]] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("attempts", "backoff", "delay_ms", "max_delay_ms", "max_attempts", "backoff_base", "backoff_multiplier", "jitter", "conditions")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_BASE_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    backoff: str
    delay_ms: int
    max_delay_ms: int
    max_attempts: int
    backoff_base: float
    backoff_multiplier: float
    jitter: bool
    conditions: _containers.RepeatedCompositeFieldContainer[RetryCondition]
    def __init__(self, attempts: _Optional[int] = ..., backoff: _Optional[str] = ..., delay_ms: _Optional[int] = ..., max_delay_ms: _Optional[int] = ..., max_attempts: _Optional[int] = ..., backoff_base: _Optional[float] = ..., backoff_multiplier: _Optional[float] = ..., jitter: _Optional[bool] = ..., conditions: _Optional[_Iterable[_Union[RetryCondition, _Mapping]]] = ...) -> None: ...

class RetryCondition(_message.Message):
    __slots__ = ("type", "patterns")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATTERNS_FIELD_NUMBER: _ClassVar[int]
    type: str
    patterns: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type: _Optional[str] = ..., patterns: _Optional[_Iterable[str]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("id", "function", "dependencies", "is_async", "docstring", "workflow", "retry", "trigger_rule_json", "requires_handle", "has_on_success", "has_on_failure")
    ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    IS_ASYNC_FIELD_NUMBER: _ClassVar[int]
    DOCSTRING_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_RULE_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_HANDLE_FIELD_NUMBER: _ClassVar[int]
    HAS_ON_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    HAS_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    id: str
    function: str
    dependencies: _containers.RepeatedScalarFieldContainer[str]
    is_async: bool
    docstring: str
    workflow: str
    retry: RetryPolicy
    trigger_rule_json: str
    requires_handle: bool
    has_on_success: bool
    has_on_failure: bool
    def __init__(self, id: _Optional[str] = ..., function: _Optional[str] = ..., dependencies: _Optional[_Iterable[str]] = ..., is_async: _Optional[bool] = ..., docstring: _Optional[str] = ..., workflow: _Optional[str] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., trigger_rule_json: _Optional[str] = ..., requires_handle: _Optional[bool] = ..., has_on_success: _Optional[bool] = ..., has_on_failure: _Optional[bool] = ...) -> None: ...

class Workflow(_message.Message):
    __slots__ = ("name", "description", "tags", "tasks", "params_json", "version", "secrets")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    params_json: str
    version: str
    secrets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., tasks: _Optional[_Iterable[str]] = ..., params_json: _Optional[str] = ..., version: _Optional[str] = ..., secrets: _Optional[_Iterable[str]] = ...) -> None: ...

class Trigger(_message.Message):
    __slots__ = ("name", "function", "workflow", "options_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    function: str
    workflow: str
    options_json: str
    def __init__(self, name: _Optional[str] = ..., function: _Optional[str] = ..., workflow: _Optional[str] = ..., options_json: _Optional[str] = ...) -> None: ...

class CallRequest(_message.Message):
    __slots__ = ("call_id", "task_id", "context_json", "cancel", "resume", "trigger")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    task_id: str
    context_json: bytes
    cancel: bool
    resume: bool
    trigger: str
    def __init__(self, call_id: _Optional[int] = ..., task_id: _Optional[str] = ..., context_json: _Optional[bytes] = ..., cancel: _Optional[bool] = ..., resume: _Optional[bool] = ..., trigger: _Optional[str] = ...) -> None: ...

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

class CallResponse(_message.Message):
    __slots__ = ("call_id", "ok", "context_json", "error", "output", "duration_ms", "progress")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    ok: bool
    context_json: bytes
    error: TaskError
    output: CapturedOutput
    duration_ms: float
    progress: Progress
    def __init__(self, call_id: _Optional[int] = ..., ok: _Optional[bool] = ..., context_json: _Optional[bytes] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., output: _Optional[_Union[CapturedOutput, _Mapping]] = ..., duration_ms: _Optional[float] = ..., progress: _Optional[_Union[Progress, str]] = ...) -> None: ...
