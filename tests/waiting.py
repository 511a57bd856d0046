"""Waiting on conditions with generous deadlines, never on fixed sleeps."""

from __future__ import annotations

import time
from typing import Callable

import psutil


def wait_until(condition: Callable[[], bool], seconds: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held within {seconds:g}s"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting to be reaped counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, seconds: float = 30) -> None:
    wait_until(lambda: gone(pid), seconds, f"the exit of process {pid}")
