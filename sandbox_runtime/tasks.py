"""Running one task call inside the sandbox, and always answering it.

A call arrives as (call_id, task_id, context bytes), or as a trigger to poll, and
leaves as a CallResponse:
the output context's bytes, or an error, with what the task printed. Whatever the
task does (raises an exception whose `__str__` raises, prints lone surrogates,
returns something JSON cannot hold, returns a context over the size limit) the
caller gets an answer: `answer` falls back to a smaller error it can encode,
and finally to a fixed one (loky's `_sendback_result` discipline).

Contexts are decoded and encoded with orjson, with the cyclic GC held off while
a large one is decoded (it otherwise runs repeatedly over the new containers).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import simdjson

from cloaca.errors import TaskError, error_from_exception
from cloaca.invoke import JSONBytes, invoke_task, invoke_task_async
from cloaca.registry import TaskSpec, TriggerSpec
from cloaca.slots import ConcurrencySlot
from cloaca.triggers import poll_answer
from sandbox_runtime import capture
from sandbox_runtime.protocol import sandbox_pb2 as pb

# Error kinds a sandbox answers with, beside cloaca.errors' (exception, ...).
INVALID_CONTEXT = "invalid_context"
CONTEXT_TOO_LARGE = "context_too_large"
CANCELLED = "cancelled"
UNKNOWN_TASK = "unknown_task"
UNKNOWN_TRIGGER = "unknown_trigger"
INTERNAL = "internal"

MAX_NESTING = 1024  # levels of arrays and objects: simdjson's limit (and orjson's)
_TEXT_LIMIT = 256 * 1024  # a message or traceback longer than this is cut (its tail kept)


class ContextError(Exception):
    """The input context cannot be given to a task; `kind` says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_context(raw: bytes) -> JSONBytes:
    """The caller's context, checked as a JSON object (not decoded), or ContextError naming what is wrong.

    simdjson checks a megabyte in under a millisecond: UTF-8, structure, numbers (NaN and
    infinities are not JSON; integers must fit in 64 bits), nesting (at most MAX_NESTING
    levels). The task's Context decodes it only if the task looks inside.
    """
    if not raw:
        return JSONBytes(b"{}")
    parser = simdjson.Parser()
    try:
        document = parser.parse(raw)
    except UnicodeDecodeError:
        raise ContextError(INVALID_CONTEXT, "the context is not valid JSON: it is not valid UTF-8") from None
    except (ValueError, RuntimeError) as exc:
        reason = str(exc)
        if "DEPTH_ERROR" in reason:
            reason = f"it is nested more than {MAX_NESTING} levels deep"
        elif "BIGINT_ERROR" in reason or "NUMBER_ERROR" in reason:
            reason = f"a number cannot be read as a 64-bit integer or a finite float ({reason})"
        raise ContextError(INVALID_CONTEXT, f"the context is not valid JSON: {reason}") from None
    is_object = isinstance(document, simdjson.Object)
    kind = type(document).__name__
    del document  # the parser's buffer is free again
    if not is_object:
        raise ContextError(INVALID_CONTEXT, f"the context must be a JSON object, not a JSON {_json_kind(kind)}")
    return JSONBytes(raw)


def _json_kind(kind: str) -> str:
    return {"Array": "array", "str": "string", "bool": "boolean", "NoneType": "null"}.get(kind, "number")


def encode_context(data: dict[str, Any] | JSONBytes, limit: int) -> bytes:
    if isinstance(data, JSONBytes):
        encoded = data.raw  # the input, unchanged: no need to encode it again
    else:
        encoded = _encode(data)
    if len(encoded) > limit:
        raise ContextError(CONTEXT_TOO_LARGE,
                           f"the task's output context is {len(encoded)} bytes, over the {limit} byte limit")
    return encoded


def _encode(data: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        if "Recursion limit" not in str(exc):
            raise ContextError(INTERNAL, f"the task's context cannot be encoded as JSON: {exc}") from None
        # orjson stops at 255 levels; the standard library goes as deep as the stack allows.
        try:
            return json.dumps(data, allow_nan=False, separators=(",", ":")).encode()
        except (ValueError, RecursionError) as deep:
            raise ContextError(INTERNAL, f"the task's context cannot be encoded as JSON: {deep}") from None


def safe_text(text: Any, limit: int = _TEXT_LIMIT) -> str:
    """Text protobuf can carry: valid UTF-8 (lone surrogates escaped), cut to its tail."""
    if not isinstance(text, str):
        try:
            text = str(text)
        except BaseException:  # noqa: BLE001 - a __str__ that raises still gets described
            text = f"<unprintable {type(text).__qualname__}>"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        text = f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]
    return text


def describe_exception(exc: BaseException, roots: tuple[str, ...]) -> TaskError:
    """error_from_exception, but never failing: a broken exception is still described."""
    try:
        error = error_from_exception(exc, roots)
    except BaseException:  # noqa: BLE001 - e.g. an exception whose __str__ raises
        try:
            name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        except BaseException:  # noqa: BLE001
            name = "Exception"
        error = TaskError("exception", name, "<the exception's message could not be read>")
    return TaskError(error.kind, safe_text(error.type, 1024), safe_text(error.message), safe_text(error.traceback),
                     tuple(error.frames))


def error_message(error: TaskError) -> pb.TaskError:
    return pb.TaskError(kind=error.kind, type=safe_text(error.type, 1024), message=safe_text(error.message),
                        traceback=safe_text(error.traceback),
                        frames=[pb.Frame(file=safe_text(f.file, 4096), line=f.line, function=safe_text(f.function, 1024))
                                for f in error.frames])


@dataclass
class Call:
    """One call in flight in this sandbox; `cancel` stops it where it can be stopped."""

    request: pb.CallRequest
    cancel: Callable[[], None] | None = None
    slot: ConcurrencySlot | None = None  # what TaskHandle.defer_until gives back while it waits


class TaskRunner:
    """Runs calls for one package: what its tasks are, how big an answer may be, where output goes."""

    def __init__(self, tasks: dict[str, TaskSpec], roots: tuple[str, ...], output_limit: int,
                 max_context_bytes: int, triggers: dict[str, TriggerSpec] | None = None) -> None:
        self.tasks = tasks
        self.triggers = triggers or {}
        self.roots = roots
        self.output_limit = output_limit
        self.max_context_bytes = max_context_bytes
        self._local = threading.local()  # each worker thread's own event loop, for async tasks

    def may_run_inline(self, task_id: str) -> bool:
        """A sync task that cannot defer (deferring waits for the loop, so it must never block the loop)."""
        spec = self.tasks.get(task_id)
        return spec is not None and not spec.is_async and not spec.requires_handle

    def run(self, call: Call) -> pb.CallResponse:
        """Run one call on the current thread; always returns an answer."""
        request = call.request
        started = time.perf_counter()
        output = capture.CallOutput(self.output_limit)
        try:
            with capture.capturing(output):
                context, error = self._execute(call)
            return self._response(request.call_id, context, error, output, started)
        except BaseException as exc:  # noqa: BLE001 - the answer must still go out
            return fallback_response(request.call_id, exc, started)

    def _execute(self, call: Call) -> tuple[bytes | None, TaskError | None]:
        request = call.request
        if request.trigger:
            return self._poll(call)
        spec = self.tasks.get(request.task_id)
        if spec is None:
            return None, TaskError(UNKNOWN_TASK, "LookupError", f"package has no task {request.task_id!r}")
        try:
            data = check_context(request.context_json)
        except ContextError as exc:
            return None, TaskError(exc.kind, "ContextError", str(exc))
        try:
            if spec.is_async:
                result = self._run_async(call, spec, data)
            else:
                result = invoke_task(spec, data, slot=call.slot)
        except asyncio.CancelledError:
            return None, TaskError(CANCELLED, "CancelledError", "the call was cancelled")
        except BaseException as exc:  # noqa: BLE001 - a task's failure is an answer
            return None, describe_exception(exc, self.roots)
        try:
            return encode_context(result, self.max_context_bytes), None
        except ContextError as exc:
            return None, TaskError(exc.kind, "ContextError", str(exc))

    def _poll(self, call: Call) -> tuple[bytes | None, TaskError | None]:
        """Call a trigger's poll function once; its answer says whether to fire, and with what."""
        trigger = self.triggers.get(call.request.trigger)
        if trigger is None or trigger.cron is not None:
            return None, TaskError(UNKNOWN_TRIGGER, "LookupError",
                                   f"package has no poll trigger {call.request.trigger!r}")
        try:
            value = trigger.function()
            if asyncio.iscoroutine(value):
                value = self._await(call, value)
            fire, context = poll_answer(value)
        except asyncio.CancelledError:
            return None, TaskError(CANCELLED, "CancelledError", "the call was cancelled")
        except BaseException as exc:  # noqa: BLE001 - a poll's failure is an answer
            return None, describe_exception(exc, self.roots)
        try:
            return encode_context({"fire": fire, "context": context}, self.max_context_bytes), None
        except ContextError as exc:
            return None, TaskError(exc.kind, "ContextError", f"the trigger's fired context: {exc}")

    def _run_async(self, call: Call, spec: TaskSpec, data: dict[str, Any]) -> dict[str, Any]:
        return self._await(call, invoke_task_async(spec, data, slot=call.slot))

    def _await(self, call: Call, coroutine: Any) -> Any:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()

        task = loop.create_task(coroutine)
        call.cancel = lambda: loop.call_soon_threadsafe(task.cancel)
        try:
            return loop.run_until_complete(task)
        finally:
            call.cancel = None

    def _response(self, call_id: int, context: bytes | None, error: TaskError | None,
                  output: capture.CallOutput, started: float) -> pb.CallResponse:
        response = pb.CallResponse(
            call_id=call_id, ok=error is None,
            output=pb.CapturedOutput(stdout=safe_text(output.stdout.getvalue()),
                                     stderr=safe_text(output.stderr.getvalue()),
                                     stdout_dropped_bytes=output.stdout.dropped,
                                     stderr_dropped_bytes=output.stderr.dropped),
            duration_ms=(time.perf_counter() - started) * 1000.0)
        if error is None:
            response.context_json = context or b"{}"
        else:
            response.error.CopyFrom(error_message(error))
        return response


def fallback_response(call_id: int, exc: BaseException, started: float) -> pb.CallResponse:
    """The smallest answer that still says what went wrong; a fixed one if even that fails."""
    try:
        message = safe_text(f"the sandbox could not build this call's answer: {type(exc).__name__}: {exc}", 4096)
    except BaseException:  # noqa: BLE001
        message = "the sandbox could not build this call's answer"
    try:
        return pb.CallResponse(call_id=call_id, ok=False, duration_ms=(time.perf_counter() - started) * 1000.0,
                               error=pb.TaskError(kind=INTERNAL, type="SandboxError", message=message))
    except BaseException:  # noqa: BLE001
        return pb.CallResponse(call_id=call_id, ok=False,
                               error=pb.TaskError(kind=INTERNAL, type="SandboxError", message="internal error"))
