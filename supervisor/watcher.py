"""Watched directories: the packages in them are loaded, reloaded and unloaded as files change.

Each file is loaded once it has stayed the same (size and mtime) across two
scans, so a copy in progress is not mistaken for a broken package. One bad
archive never blocks the others; its error shows in ListPackages and the log.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from supervisor.errors import PackageError
from supervisor.tenants import DEFAULT_TENANT, PackageHost

log = logging.getLogger(__name__)

Signature = tuple[int, int]  # (size, mtime_ns)


class DirectoryWatcher:
    def __init__(self, host: PackageHost, directories: list[Path], interval: float = 1.0,
                 tenant: str = DEFAULT_TENANT) -> None:
        self.host = host
        self.directories = directories
        self.interval = interval
        self.tenant = tenant
        self._loaded: dict[Path, Signature] = {}  # what is loaded (or failed) from each file
        self._seen: dict[Path, Signature] = {}  # what the previous scan saw
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for directory in self.directories:
            directory.mkdir(parents=True, exist_ok=True)
        await self.scan(settle=False)  # at start, files present are taken as complete
        self._task = asyncio.get_running_loop().create_task(self._run(), name="package-watcher")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.scan()
            except Exception:  # noqa: BLE001 - the watcher must keep watching
                log.exception("scanning the watched directories failed")

    async def scan(self, settle: bool = True) -> None:
        current = self._current_files()
        for path in sorted(set(self._loaded) - set(current)):
            log.info("watched package %s disappeared: unloading", path)
            self._loaded.pop(path)
            await self.host.forget_file(self.tenant, path)
        for path, signature in sorted(current.items()):
            if self._loaded.get(path) == signature:
                continue
            if settle and self._seen.get(path) != signature:
                continue  # still changing, or new: look again next scan
            self._loaded[path] = signature
            try:
                view = await self.host.load_file(self.tenant, path)
                log.info("watched package %s loaded as %s %s", path, view.name, view.version)
            except (PackageError, OSError):
                pass  # recorded by the host, visible in ListPackages
        self._seen = current

    def _current_files(self) -> dict[Path, Signature]:
        found: dict[Path, Signature] = {}
        for directory in self.directories:
            try:
                entries = list(directory.iterdir())
            except OSError as exc:
                log.warning("cannot read watched directory %s: %s", directory, exc)
                continue
            for path in entries:
                if path.name.startswith(".") or path.name.endswith((".partial", ".tmp")):
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if path.is_file():
                    found[path] = (stat.st_size, stat.st_mtime_ns)
        return found

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
