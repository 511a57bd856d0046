"""One service per data dir: an exclusive lock on a file inside it, held for the service's life.

The lock is `flock` on `DATA_DIR/service.lock`: the kernel drops it when the
holder exits, however it exits (SIGKILL included), so a stale lock never
outlives its service. The holder writes its pid into the file, so a second
service can say who holds it. `flock` locks belong to the open file, so two
services in one process (tests) exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "service.lock"


class DataDirInUse(RuntimeError):
    """Another service holds the data dir."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise DataDirInUse naming the pid that holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise DataDirInUse(f"the data dir {self.path.parent} is in use by another cloaca-sandbox serve ({who}); "
                               "stop that one, or give this one another --data-dir") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DataDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
