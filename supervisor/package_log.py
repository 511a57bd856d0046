"""A package's recent history: what its sandboxes wrote outside calls, and their lifecycle events.

One `PackageLog` per loaded package (kept across restarts and replacements by
a new version, dropped at unload), bounded two ways: the last `output_bytes` of
output (64 KiB) and the last `max_events` events (200), so neither a chatty
sandbox nor a crash loop grows it. Entries are numbered; a reader asks for
those after the last number it saw, and `wait` lets a follower sleep until
there are more (`cloaca-sandbox logs --follow`).

Output is kept as read from the sandbox's pipe (a piece may hold many lines,
or part of one), and decoded only when read: storing it costs one append per
64 KiB read, however many lines a sandbox writes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from supervisor.sandboxes.events import SandboxEvent

OUTPUT, EVENT = "output", "event"


@dataclass(frozen=True)
class LogEntry:
    seq: int
    time: float  # seconds since the epoch
    kind: str  # "output" or "event"
    version: str
    incarnation: int
    text: str  # output: what the sandbox wrote; event: a sentence
    event: SandboxEvent | None = None


class PackageLog:
    def __init__(self, output_bytes: int = 64 * 1024, max_events: int = 200) -> None:
        self.output_bytes = output_bytes
        self._output: deque[tuple[int, float, str, int, bytes]] = deque()
        self._output_size = 0
        self.dropped_output_bytes = 0
        self._events: deque[LogEntry] = deque(maxlen=max_events)
        self._seq = 0
        self._followers: list[asyncio.Future[None]] = []
        self.closed = False

    @property
    def last_seq(self) -> int:
        return self._seq

    def add_output(self, version: str, incarnation: int, data: bytes) -> None:
        self._seq += 1
        self._output.append((self._seq, time.time(), version, incarnation, data))
        self._output_size += len(data)
        while self._output_size > self.output_bytes and len(self._output) > 1:
            dropped = self._output.popleft()[4]
            self._output_size -= len(dropped)
            self.dropped_output_bytes += len(dropped)
        self._wake()

    def add_event(self, event: SandboxEvent) -> None:
        self._seq += 1
        self._events.append(LogEntry(self._seq, event.time, EVENT, event.version, event.incarnation,
                                     event.sentence(), event))
        self._wake()

    def entries(self, after: int = 0) -> list[LogEntry]:
        """Every kept entry numbered above `after`, oldest first."""
        output = [LogEntry(seq, when, OUTPUT, version, incarnation, data.decode("utf-8", "replace"))
                  for seq, when, version, incarnation, data in self._output if seq > after]
        events = [entry for entry in self._events if entry.seq > after]
        return sorted(output + events, key=lambda entry: entry.seq)

    def events(self) -> list[LogEntry]:
        return list(self._events)

    async def wait(self, after: int) -> None:
        """Return once there is an entry numbered above `after`, or the log is closed."""
        if self._seq > after or self.closed:
            return
        follower = asyncio.get_running_loop().create_future()
        self._followers.append(follower)
        try:
            await follower
        finally:
            if follower in self._followers:
                self._followers.remove(follower)

    def close(self) -> None:
        """No more entries (the package was unloaded, or the service stops): followers finish."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._followers:
            followers, self._followers = self._followers, []
            for follower in followers:
                if not follower.done():
                    follower.set_result(None)
