"""`Supervisor`: the synchronous face of the async core, for programs without an event loop.

    with Supervisor(SupervisorConfig(call_timeout=30)) as supervisor:
        info = supervisor.load("data-pipeline-1.0.0.cloacina")
        result = supervisor.call("data-pipeline", "extract", {"day": "2026-11-22"})
        run = supervisor.run_workflow("data-pipeline", "data_pipeline", {})

Each method runs the core's coroutine (supervisor.core.AsyncSupervisor) on a
private event loop thread and waits for it: `x = run_sync("x")`, as
jupyter_client writes its blocking managers. Every method is thread-safe.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine, TypeVar

from supervisor.archive import ExtractionLimits
from supervisor.config import SupervisorConfig
from supervisor.core import AsyncSupervisor

T = TypeVar("T")


def run_sync(name: str) -> Callable[..., Any]:
    """A blocking method that runs the core's method `name` on the facade's loop."""
    method = getattr(AsyncSupervisor, name)

    @functools.wraps(method)
    def blocking(self: "Supervisor", *args: Any, **kwargs: Any) -> Any:
        if asyncio.iscoroutinefunction(method):
            return self._run(getattr(self.core, name)(*args, **kwargs))
        return self._run(_call(getattr(self.core, name), *args, **kwargs))

    return blocking


async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return function(*args, **kwargs)


class Supervisor:
    def __init__(self, config: SupervisorConfig | None = None,
                 extraction_limits: ExtractionLimits = ExtractionLimits()) -> None:
        self.core = AsyncSupervisor(config, extraction_limits)
        self.config = self.core.config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="supervisor-loop", daemon=True)
        self._thread.start()
        try:
            self._run(self.core.start())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("this supervisor has been closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def work_dir(self) -> Path | None:
        return self.core.work_dir

    @property
    def staging_dir(self) -> Path:
        return self.core.staging_dir

    load = run_sync("load")
    unload = run_sync("unload")
    packages = run_sync("packages")
    package = run_sync("package")
    tasks = run_sync("tasks")
    discovery = run_sync("discovery")
    call = run_sync("call")
    run_workflow = run_sync("run_workflow")

    def close(self) -> None:
        """Stop every sandbox (whole process trees), the zygote, and remove the staging area."""
        if not self._thread.is_alive():
            return
        try:
            self._run(self.core.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
