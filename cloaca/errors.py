"""A task's failure as data: kind, type, message, traceback and frames.

Built where the exception happened (the local runner or a sandbox) and
carried unchanged to whoever asked, so a failure reads the same everywhere.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

# The kinds a failure can be; each limit has its own so callers can react.
EXCEPTION = "exception"
TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
CRASHED = "crashed"
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Frame:
    file: str  # relative to the package root when the file is inside it
    line: int
    function: str


@dataclass(frozen=True)
class TaskError:
    kind: str
    type: str
    message: str
    traceback: str = ""
    frames: tuple[Frame, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frames"] = [asdict(frame) for frame in self.frames]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskError":
        frames = tuple(Frame(**frame) for frame in data.get("frames", ()))
        return cls(data["kind"], data["type"], data["message"], data.get("traceback", ""), frames)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


def qualified_type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _relative(path: str, roots: tuple[str, ...]) -> str:
    for root in roots:
        if root and (path == root or path.startswith(root.rstrip(os.sep) + os.sep)):
            return os.path.relpath(path, root)
    return path


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(root and path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _drop_runtime_frames(exc: BaseException, roots: tuple[str, ...]) -> None:
    """Start the traceback at the package's first frame, as Python hides importlib's.

    The frames before it belong to whatever called the task (the runner,
    the sandbox runtime) and only bury the author's own code.
    """
    tb = exc.__traceback__
    while tb is not None and not _inside(tb.tb_frame.f_code.co_filename, roots):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb


def error_from_exception(exc: BaseException, roots: tuple[str, ...] = (), kind: str = EXCEPTION) -> TaskError:
    """Describe `exc`, with its chained causes in the traceback text.

    `roots` are the package's directories: frames inside them are shown
    relative to them, so a traceback does not leak the host's layout.
    """
    real_roots = tuple(os.path.realpath(root) for root in roots)
    _drop_runtime_frames(exc, roots + real_roots)
    text = "".join(traceback.format_exception(exc))
    for root, real in zip(roots, real_roots):
        for prefix in {root.rstrip(os.sep) + os.sep, real.rstrip(os.sep) + os.sep}:
            text = text.replace(prefix, "")
    frames = tuple(
        Frame(_relative(summary.filename, roots + real_roots), summary.lineno or 0, summary.name)
        for summary in traceback.extract_tb(exc.__traceback__)
    )
    return TaskError(kind, qualified_type_name(exc), str(exc), text, frames)


class TaskFailed(Exception):
    """Raised by an executor when one attempt of a task failed."""

    def __init__(self, error: TaskError, retryable: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
