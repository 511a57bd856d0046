"""`cloaca.TaskHandle`: what a task whose second parameter is `handle` (or `task_handle`) receives.

`handle.defer_until(condition, poll_interval_ms=1000)` releases the task's
concurrency slot, calls `condition()` every interval until it returns True
(an exception is printed and counts as False), then takes a slot back.
`handle.is_slot_held()` says whether the task holds its slot. Once the task
has returned, both raise ValueError("TaskHandle has already been consumed").
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

from cloaca.slots import ConcurrencySlot, NoSlot

HANDLE_PARAMETERS = ("handle", "task_handle")


def wants_handle(function: Callable[..., Any]) -> bool:
    """The engine's rule: two or more positional parameters, the second named handle or task_handle."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    return code.co_argcount >= 2 and code.co_varnames[1] in HANDLE_PARAMETERS


class TaskHandle:
    def __init__(self, slot: ConcurrencySlot | None = None) -> None:
        self._slot = slot if slot is not None else NoSlot()
        self._held = True
        self._consumed = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self._consumed:
            raise ValueError("TaskHandle has already been consumed")

    def defer_until(self, condition: Callable[[], Any], poll_interval_ms: int = 1000) -> None:
        """Wait, without holding a concurrency slot, until `condition()` returns True."""
        self._check()
        if not callable(condition):
            raise TypeError(f"defer_until needs a callable condition, not {type(condition).__qualname__}")
        if isinstance(poll_interval_ms, bool) or not isinstance(poll_interval_ms, int) or poll_interval_ms < 0:
            raise OverflowError(f"poll_interval_ms must be a non-negative int, not {poll_interval_ms!r}")
        with self._lock:
            self._slot.release()
            self._held = False
        try:
            while not _poll(condition):
                time.sleep(poll_interval_ms / 1000.0)
        finally:
            self._slot.reacquire()
            with self._lock:
                self._held = True

    def is_slot_held(self) -> bool:
        self._check()
        return self._held

    def consume(self) -> None:
        """The task returned: the handle is no longer usable."""
        self._consumed = True

    def __repr__(self) -> str:
        state = "consumed" if self._consumed else ("holding its slot" if self._held else "deferred")
        return f"TaskHandle({state})"


def _poll(condition: Callable[[], Any]) -> bool:
    try:
        result = condition()
    except Exception as exc:  # noqa: BLE001 - the engine prints and treats it as not yet
        print(f"[cloaca] defer_until condition error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    if not isinstance(result, bool):
        # The engine extracts a bool and treats anything else as False; say so, since it never ends.
        print(f"[cloaca] defer_until condition returned {type(result).__name__}, not bool: treated as False",
              file=sys.stderr)
        return False
    return result
