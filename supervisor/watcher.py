"""Watched directories: the packages in them are loaded, reloaded and unloaded as files change.

The kernel tells us of changes (inotify, through `watchfiles`); nothing is
scanned on a timer. A file is loaded once it has stopped changing: each change
to it re-arms its own timer, and only `settle` seconds without one (1 s by
default) let it load, so a copy in progress is not mistaken for a broken
package. Files present at start are taken as complete. One bad archive never
blocks the others; its error shows in ListPackages and the log. Hidden files
and *.partial / *.tmp are ignored, as are subdirectories.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from supervisor.errors import PackageError
from supervisor.tenants import DEFAULT_TENANT, PackageHost

log = logging.getLogger(__name__)

Signature = tuple[int, int]  # (size, mtime_ns)


def watched_name(name: str) -> bool:
    return not name.startswith(".") and not name.endswith((".partial", ".tmp"))


class DirectoryWatcher:
    def __init__(self, host: PackageHost, directories: list[Path], settle: float = 1.0,
                 tenant: str = DEFAULT_TENANT) -> None:
        self.host = host
        self.directories = [directory.absolute() for directory in directories]
        self.settle = settle
        self.tenant = tenant
        self._loaded: dict[Path, Signature] = {}  # what is loaded (or failed) from each file
        self._timers: dict[Path, asyncio.TimerHandle] = {}  # files changing: each loads when its timer fires
        self._serial = asyncio.Lock()  # one load or unload at a time, in the order files settled
        self._work: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for directory in self.directories:
            directory.mkdir(parents=True, exist_ok=True)
        if not self.directories:
            return
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="package-watcher")
        for path in sorted(self._current_files()):  # present at start: taken as complete
            await self._reconcile(path)

    async def _watch(self) -> None:
        # The watcher reports a burst of changes at least every `debounce` ms, well inside `settle`,
        # so a file written continuously keeps re-arming its timer.
        debounce = max(50, int(self.settle * 1000 / 4))
        async for changes in awatch(*self.directories, watch_filter=self._wanted, debounce=debounce,
                                    step=min(50, debounce), stop_event=self._stop, recursive=False):
            for _, raw in changes:
                self._changed(Path(raw))

    def _wanted(self, change: Change, raw: str) -> bool:
        path = Path(raw)
        return path.parent in self.directories and watched_name(path.name)

    def _changed(self, path: Path) -> None:
        """A change to `path`: it loads (or unloads) once `settle` seconds pass without another."""
        timer = self._timers.pop(path, None)
        if timer is not None:
            timer.cancel()
        self._timers[path] = asyncio.get_running_loop().call_later(self.settle, self._settled, path)

    def _settled(self, path: Path) -> None:
        self._timers.pop(path, None)
        task = asyncio.get_running_loop().create_task(self._reconcile(path))
        self._work.add(task)
        task.add_done_callback(self._work.discard)

    async def _reconcile(self, path: Path) -> None:
        """Make what is loaded from `path` match the file: load, reload, or unload it."""
        async with self._serial:
            try:
                signature = _signature(path)
                if signature is None:
                    if self._loaded.pop(path, None) is not None:
                        log.info("watched package %s disappeared: unloading", path)
                        await self.host.forget_file(self.tenant, path)
                    return
                if self._loaded.get(path) == signature:
                    return
                self._loaded[path] = signature
                try:
                    view = await self.host.load_file(self.tenant, path)
                    log.info("watched package %s loaded as %s %s", path, view.name, view.version)
                except (PackageError, OSError):
                    pass  # recorded by the host, visible in ListPackages
            except Exception:  # noqa: BLE001 - the watcher must keep watching
                log.exception("reconciling the watched file %s failed", path)

    def _current_files(self) -> list[Path]:
        found = []
        for directory in self.directories:
            try:
                entries = list(directory.iterdir())
            except OSError as exc:
                log.warning("cannot read watched directory %s: %s", directory, exc)
                continue
            found += [path for path in entries if watched_name(path.name) and _signature(path) is not None]
        return found

    async def stop(self) -> None:
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._work):
            task.cancel()
        await asyncio.gather(*self._work, return_exceptions=True)


def _signature(path: Path) -> Signature | None:
    """(size, mtime) of a regular file, or None when it is gone or not a file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    return stat.st_size, stat.st_mtime_ns
