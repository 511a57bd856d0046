"""Calling one task function: context in, context out, JSON all the way."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Callable

from cloaca._json import check_json_object
from cloaca.context import Context


class InvalidTaskResult(TypeError):
    """A task returned something other than a Context, a dict or None."""


def invoke_task(function: Callable[..., Any], data: dict[str, Any]) -> dict[str, Any]:
    """Run `function` on a Context made from `data`; return the resulting data.

    The task may return the context, a dict, or None (its in-place changes
    count). Async tasks run to completion on a fresh event loop.
    """
    context = Context(data)
    result = function(context)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    return _output(context, result)


async def invoke_task_async(function: Callable[..., Any], data: dict[str, Any]) -> dict[str, Any]:
    """invoke_task for a caller already in an event loop: an async body is awaited there."""
    context = Context(data)
    result = function(context)
    if inspect.isawaitable(result):
        result = await result
    return _output(context, result)


def _output(context: Context, result: Any) -> dict[str, Any]:
    if result is None or result is context:
        return context.to_dict()
    if isinstance(result, Context):
        return result.to_dict()
    if isinstance(result, dict):
        # The dict came straight from the task: check it as a whole context.
        return check_json_object(result)
    raise InvalidTaskResult(
        f"a task must return a cloaca.Context, a dict or None, not {type(result).__qualname__}"
    )


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
