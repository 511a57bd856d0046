"""Per-call capture of what a task prints, bounded to the tail.

sys.stdout and sys.stderr are replaced by streams that route each write to
the buffer of the call running on the writing thread (async tasks run on
that thread too). Writes from anywhere else go to the interpreter's real
stream, which the supervisor drains. The protocol has its own socket, so
nothing printed can corrupt it.
"""

from __future__ import annotations

import io
import sys
import threading
from collections import deque
from contextlib import contextmanager
from typing import Iterator, TextIO

_current = threading.local()


class TailBuffer:
    """Keeps the last `limit` characters written; counts what it dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[str] = deque()
        self._size = 0
        self.dropped = 0

    def write(self, text: str) -> None:
        if not text:
            return
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.limit and self._chunks:
            excess = self._size - self.limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self._size -= len(head)
                self.dropped += len(head)
            else:
                self._chunks[0] = head[excess:]
                self._size -= excess
                self.dropped += excess

    def getvalue(self) -> str:
        return "".join(self._chunks)


class CallOutput:
    def __init__(self, limit: int) -> None:
        self.stdout = TailBuffer(limit)
        self.stderr = TailBuffer(limit)


class RoutingStream(io.TextIOBase):
    """A text stream that writes to the current call's buffer, or to `fallback`."""

    def __init__(self, name: str, fallback: TextIO) -> None:
        self._name = name
        self._fallback = fallback

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            # What sys.stdout itself says; the task gets the TypeError, not a lost answer.
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        output: CallOutput | None = getattr(_current, "output", None)
        if output is None:
            return self._fallback.write(text)
        getattr(output, self._name).write(text)
        return len(text)

    @property
    def buffer(self) -> "_BytesView":
        """`sys.stdout.buffer`: bytes written here are kept as text (undecodable bytes escaped)."""
        return _BytesView(self)

    def flush(self) -> None:
        if getattr(_current, "output", None) is None:
            self._fallback.flush()

    def fileno(self) -> int:  # for code that needs the real descriptor (faulthandler, subprocess)
        return self._fallback.fileno()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _BytesView(io.RawIOBase):
    def __init__(self, stream: RoutingStream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._stream.write(bytes(data).decode("utf-8", "backslashreplace"))
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._stream.flush()


def install() -> None:
    """Route prints per call; outside calls they go to fds 1 and 2 (the supervisor keeps the tail).

    The interpreter's own streams were made for whatever fds 1 and 2 were before
    this process was forked; fresh ones fit the pipe they are now, and never fail
    on text they cannot encode.
    """
    for fd, name in ((1, "__stdout__"), (2, "__stderr__")):
        setattr(sys, name, open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                                closefd=False))
    sys.stdout = RoutingStream("stdout", sys.__stdout__)  # type: ignore[assignment]
    sys.stderr = RoutingStream("stderr", sys.__stderr__)  # type: ignore[assignment]


@contextmanager
def capturing(output: CallOutput) -> Iterator[CallOutput]:
    """Route this thread's prints into `output` for the duration."""
    _current.output = output
    try:
        yield output
    finally:
        _current.output = None
