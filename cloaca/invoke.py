"""Running one task: the task contract, in one place for every runner.

`invoke_task(spec, data)` (or `await invoke_task_async(spec, data)`) does what
the engine's task wrapper does:

- the function gets a fresh `Context` holding a copy of `data` (and, when its
  second parameter is `handle` or `task_handle`, a `TaskHandle` over `slot`);
- returning None means "no change": the output is the input as it was before
  the call, and in-place changes to the context are dropped;
- returning a `Context` makes its data the output;
- any exception fails the attempt; `on_failure(task_id, message, context)`
  is called with the engine's message, "Python task execution failed:
  {Type}: {message}", and the exception propagates to the caller;
- after a success `on_success(task_id, context)` gets a copy of the output;
- an exception inside a callback is printed to stderr and swallowed.

Beyond the engine (engine code cannot notice): `async def` tasks (awaited;
`invoke_task` runs them to completion with `asyncio.run`), and returning a
dict, taken as the output data.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloaca._json import to_json_object
from cloaca.context import Context
from cloaca.handle import TaskHandle
from cloaca.registry import TaskSpec
from cloaca.slots import ConcurrencySlot

ENGINE_FAILURE_PREFIX = "Python task execution failed: "


class InvalidTaskResult(TypeError):
    """A task returned something other than a Context, a dict or None."""


def engine_error_message(exc: BaseException) -> str:
    """How the engine words a task's failure: what on_failure receives and retry patterns match."""
    return f"{ENGINE_FAILURE_PREFIX}{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class JSONBytes:
    """A context as JSON bytes the caller has already checked (a JSON object, nothing JSON cannot carry).

    The sandbox runtime gives a task's input this way: the task's Context decodes it
    only when first used, and an output that is still the input comes back as the
    same bytes, never decoded or encoded again.
    """

    raw: bytes


ContextData = Mapping[str, Any] | JSONBytes


class _Invocation:
    """One call of one task: its input, its context, its handle, and its callbacks."""

    def __init__(self, spec: TaskSpec, data: ContextData, slot: ConcurrencySlot | None) -> None:
        self.spec = spec
        self.original: dict[str, Any] | JSONBytes
        if isinstance(data, JSONBytes):
            self.original = data
            self.context = Context._from_checked_json(data.raw)
        else:
            self.original = to_json_object(data)
            self.context = Context(self.original)
        self.handle = TaskHandle(slot) if spec.requires_handle else None

    def call(self) -> Any:
        if self.handle is not None:
            return self.spec.function(self.context, self.handle)
        return self.spec.function(self.context)

    def output(self, result: Any) -> dict[str, Any] | JSONBytes:
        if result is None:
            return self.original
        if isinstance(result, Context):
            unchanged = result.unchanged_json()
            return JSONBytes(unchanged) if unchanged is not None else result.to_dict()
        if isinstance(result, Mapping):
            return to_json_object(result)
        raise InvalidTaskResult(
            f"a task must return a cloaca.Context or None (or a dict), not {type(result).__qualname__}")

    def succeeded(self, output: dict[str, Any] | JSONBytes) -> None:
        if self.spec.on_success is not None:
            context = Context._from_checked_json(output.raw) if isinstance(output, JSONBytes) else Context(output)
            _run_callback("on_success", self.spec.id, self.spec.on_success, self.spec.id, context)

    def failed(self, exc: BaseException) -> None:
        if self.spec.on_failure is not None:
            _run_callback("on_failure", self.spec.id, self.spec.on_failure, self.spec.id,
                          engine_error_message(exc), self.context)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.consume()


def _run_callback(kind: str, task_id: str, callback: Any, *args: Any) -> None:
    try:
        callback(*args)
    except Exception as exc:  # noqa: BLE001 - the engine prints and swallows callback errors
        print(f"[cloaca] {kind} callback failed for task '{task_id}': {type(exc).__name__}: {exc}", file=sys.stderr)


def invoke_task(spec: TaskSpec, data: ContextData, *,
                slot: ConcurrencySlot | None = None) -> dict[str, Any] | JSONBytes:
    """Run `spec`'s function on `data`; return the output data, or raise the task's exception.

    The output is a dict, or (when `data` was JSONBytes and the task left it unchanged)
    the same JSONBytes.

    An `async def` task is run to completion with `asyncio.run` on this
    thread; code already inside an event loop uses `invoke_task_async`.
    """
    invocation = _Invocation(spec, data, slot)
    try:
        result = invocation.call()
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        output = invocation.output(result)
    except BaseException as exc:
        invocation.failed(exc)
        raise
    finally:
        invocation.close()
    invocation.succeeded(output)
    return output


async def invoke_task_async(spec: TaskSpec, data: ContextData, *,
                            slot: ConcurrencySlot | None = None) -> dict[str, Any] | JSONBytes:
    """The coroutine form of `invoke_task`: awaits an async task's body on the running loop.

    A sync task body still runs on the calling thread (the loop), so a caller
    on a loop should hand sync tasks to a thread and only await async ones.
    """
    invocation = _Invocation(spec, data, slot)
    try:
        result = invocation.call()
        if inspect.isawaitable(result):
            result = await result
        output = invocation.output(result)
    except BaseException as exc:
        invocation.failed(exc)
        raise
    finally:
        invocation.close()
    invocation.succeeded(output)
    return output


async def _await(awaitable: Any) -> Any:
    return await awaitable
