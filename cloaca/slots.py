"""Concurrency slots: what a deferred task gives back while it waits.

A runner bounds how many tasks run at once; each running attempt holds a
slot. `TaskHandle.defer_until` releases the caller's slot while it polls and
takes one back before the task goes on. The runner decides what a slot is:

- `SemaphoreSlot`: one permit of a `threading.Semaphore` (DefaultRunner's
  `max_concurrent_tasks`, and the engine used by the supervisor);
- `NoSlot`: nothing to give back (a task called with no limit around it);
- any object with `release()` and `reacquire()`, e.g. one the sandbox
  runtime supplies that tells the supervisor to admit another call.

The engine publishes the slot of the attempt running on a thread through
`current_slot()`, so an executor can hand it to `invoke_task` or to a
sandbox without the engine knowing where tasks run.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Protocol


class ConcurrencySlot(Protocol):
    def release(self) -> None:
        """Give the slot back while the task waits."""

    def reacquire(self) -> None:
        """Take a slot again (blocking until one is free) before the task goes on."""


class NoSlot:
    """No concurrency limit around the task: nothing to give back."""

    def release(self) -> None:
        pass

    def reacquire(self) -> None:
        pass


class SemaphoreSlot:
    """One permit of `semaphore`, held from `acquire()` until `release()`; release twice is harmless."""

    def __init__(self, semaphore: threading.Semaphore) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._held = False
        self._abandoned = False

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self, timeout: float | None = None) -> bool:
        if not self._semaphore.acquire(timeout=timeout):
            return False
        with self._lock:
            if self._abandoned:  # the attempt was given up on while we waited
                self._semaphore.release()
                return False
            self._held = True
        return True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._semaphore.release()

    def reacquire(self) -> None:
        with self._lock:
            if self._held or self._abandoned:
                return
        self.acquire()

    def abandon(self) -> None:
        """Release for good: the runner stopped waiting for this attempt (it timed out)."""
        with self._lock:
            self._abandoned = True
        self.release()


_current: contextvars.ContextVar[ConcurrencySlot | None] = contextvars.ContextVar("cloaca_slot", default=None)


def current_slot() -> ConcurrencySlot | None:
    """The slot of the attempt this thread is running for the engine, if any."""
    return _current.get()


def set_current_slot(slot: ConcurrencySlot | None) -> contextvars.Token[ConcurrencySlot | None]:
    return _current.set(slot)


def reset_current_slot(token: contextvars.Token[ConcurrencySlot | None]) -> None:
    _current.reset(token)
