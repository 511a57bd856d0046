"""The real service on a real socket, run on its own event loop thread inside the test process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, TypeVar

from supervisor.edge.server import ServiceConfig, SupervisorServer

T = TypeVar("T")


class ServerThread:
    """A SupervisorServer on a private loop; `run` executes a coroutine on that loop and waits."""

    def __init__(self, config: ServiceConfig) -> None:
        self.server = SupervisorServer(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 180) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> str:
        """Start listening and wait until stored and watched packages have loaded; returns the address."""
        self.run(self.server.start())
        self.run(self.server.loaded.wait())
        return f"127.0.0.1:{self.server.port}"

    @property
    def host(self) -> Any:
        return self.server.host

    def stop(self, grace: float = 1.0) -> None:
        if self.loop.is_closed():
            return  # stopped already
        try:
            self.run(self.server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()
