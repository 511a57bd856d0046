"""What a sandbox writes outside task calls (its import's prints, warnings, its own errors).

Each incarnation's stdout and stderr are one pipe the supervisor reads on its
event loop, keeping the last bytes in a bounded buffer (for diagnostics: why did
it fail to start?). Reading costs one read and one slice per 64 KiB, whatever a
sandbox writes: a flood of tiny lines costs the event loop no more than a few
large ones, and lines are split only when someone asks for them (or when the
debug log wants each one). The read end never blocks anything: it is dropped
when the incarnation is cleaned up, whoever still holds the write end.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Callable

log = logging.getLogger(__name__)

_READ = 65536


class OutputPipe:
    def __init__(self, label: str, keep_bytes: int = 64 * 1024, level: int = logging.DEBUG,
                 sink: Callable[[bytes], None] | None = None) -> None:
        self.label = label
        self.sink = sink  # also gets each piece as read (the package's log ring)
        self.level = level
        self.keep_bytes = keep_bytes
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.read_fd, False)
        self._kept = bytearray()
        self.dropped = 0  # bytes that fell out of the buffer
        self._partial = b""  # an unfinished line, for the log
        self._eof = asyncio.get_running_loop().create_future()
        self._expected: tuple[bytes, asyncio.Future[None]] | None = None
        asyncio.get_running_loop().add_reader(self.read_fd, self._on_readable)

    def close_write_end(self) -> None:
        """Once the child has its copy: only the child's side keeps the pipe open."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _on_readable(self) -> None:
        try:
            data = os.read(self.read_fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._finish()
            return
        if self._expected is not None:
            mark, seen = self._expected
            if mark in self._kept[-len(mark):] + data:
                self._expected = None
                data = data.replace(mark, b"")  # the runtime's signal, not the sandbox's output
                if not seen.done():
                    seen.set_result(None)
        self._kept += data
        if self.sink is not None and data:
            self.sink(data)
        excess = len(self._kept) - self.keep_bytes
        if excess > 0:
            del self._kept[:excess]
            self.dropped += excess
        if log.isEnabledFor(self.level):
            *complete, self._partial = (self._partial + data).split(b"\n")
            self._partial = self._partial[-4096:]
            for raw in complete:
                log.log(self.level, "[%s] %s", self.label, raw[:4096].decode("utf-8", "replace").rstrip("\r"))

    def _finish(self) -> None:
        if self._partial and log.isEnabledFor(self.level):
            log.log(self.level, "[%s] %s", self.label, self._partial.decode("utf-8", "replace"))
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

    def expect(self, mark: bytes) -> asyncio.Future[None]:
        """A future resolved when `mark` appears in the output from now on."""
        seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if mark in self._kept:
            seen.set_result(None)
        else:
            self._expected = (mark, seen)
        return seen

    async def drained(self, timeout: float) -> None:
        """Wait (briefly) for the last of the output after the process has gone."""
        try:
            await asyncio.wait_for(asyncio.shield(self._eof), timeout)
        except asyncio.TimeoutError:
            pass

    @property
    def lines(self) -> list[str]:
        """The kept output, line by line (the first may be the tail of a longer one)."""
        return self._kept.decode("utf-8", "replace").splitlines()

    def tail(self, lines: int = 50) -> str:
        return "\n".join(self.lines[-lines:])

    def close(self) -> None:
        self.close_write_end()
        self._stop_reading()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
