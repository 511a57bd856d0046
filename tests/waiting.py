"""Waiting on conditions with generous deadlines, never on fixed sleeps."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import psutil

T = TypeVar("T")


def wait_for(condition: Callable[[], T], seconds: float = 60, what: str = "condition") -> T:
    """The first truthy value `condition()` returns, polled until the deadline."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} never held within {seconds:g}s"
        time.sleep(0.05)
    return value


def wait_until(condition: Callable[[], bool], seconds: float = 60, what: str = "condition") -> None:
    wait_for(condition, seconds, what)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, seconds: float = 30) -> None:
    wait_until(lambda: gone(pid), seconds, f"the exit of process {pid}")
