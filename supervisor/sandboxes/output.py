"""What a sandbox writes outside task calls (its import's prints, warnings, its own errors).

Each incarnation's stdout and stderr are one pipe the supervisor reads on its
event loop, keeping the last lines in a bounded ring (for diagnostics: why did
it fail to start?) and logging each at debug level. The read end never blocks
anything: it is dropped when the incarnation is cleaned up, whoever still holds
the write end.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque

log = logging.getLogger(__name__)


class OutputPipe:
    def __init__(self, label: str, max_lines: int = 200, max_line: int = 4096, level: int = logging.DEBUG) -> None:
        self.label = label
        self.level = level
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self.lines: deque[str] = deque(maxlen=max_lines)
        self._max_line = max_line
        self._partial = b""
        self._eof = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(self.read_fd, self._on_readable)

    def close_write_end(self) -> None:
        """Once the child has its copy: only the child's side keeps the pipe open."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish()
            return
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > self._max_line:
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            self._add(raw)

    def _add(self, raw: bytes) -> None:
        line = raw[: self._max_line].decode("utf-8", "replace").rstrip("\r")
        self.lines.append(line)
        log.log(self.level, "[%s] %s", self.label, line)

    def _finish(self) -> None:
        if self._partial:
            self._add(self._partial)
            self._partial = b""
        self._stop_reading()
        if not self._eof.done():
            self._eof.set_result(None)

    def _stop_reading(self) -> None:
        if self.read_fd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self.read_fd)
            except (RuntimeError, ValueError):
                pass

    async def drained(self, timeout: float) -> None:
        """Wait (briefly) for the last of the output after the process has gone."""
        try:
            await asyncio.wait_for(asyncio.shield(self._eof), timeout)
        except asyncio.TimeoutError:
            pass

    def tail(self, lines: int = 50) -> str:
        return "\n".join(list(self.lines)[-lines:])

    def close(self) -> None:
        self.close_write_end()
        self._stop_reading()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
