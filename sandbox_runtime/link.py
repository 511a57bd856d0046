"""The sandbox's end of its link to the supervisor: the Sandbox gRPC service.

    supervisor ──Calls stream──▶ reader (event loop) ──SimpleQueue──▶ worker threads
               ◀─────────────── writer (event loop) ◀─call_soon_threadsafe── (answers)

One grpc.aio server on the loop thread serves `Discover` (answered once the
entry module is imported) and one long-lived `Calls` stream. The reader hands
each request to a pool of worker threads (at most as many busy as the package's
concurrency, one more whenever all are busy); each answer comes back to the loop
with a single `call_soon_threadsafe` and goes out on the stream. Every RPC must
carry the incarnation's token; without it the RPC is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from typing import Any, AsyncIterator

import grpc

from cloaca.registry import REGISTRY, TaskSpec
from sandbox_runtime.declarations import describe, import_entry_module
from sandbox_runtime.protocol import sandbox_pb2 as pb
from sandbox_runtime.protocol import sandbox_pb2_grpc
from sandbox_runtime.tasks import Call, TaskRunner, describe_exception, error_message

TOKEN_METADATA = "x-sandbox-token"


def discovery_message(document: dict[str, Any]) -> pb.Discovery:
    return pb.Discovery(
        tasks=[pb.Task(id=t["id"], function=t["function"], dependencies=t["dependencies"], is_async=t["is_async"],
                       docstring=t["docstring"], workflow=t["workflow"], retry=pb.RetryPolicy(**t["retry"]),
                       trigger_rule_json=json.dumps(t["trigger_rule"]))
               for t in document["tasks"]],
        workflows=[pb.Workflow(name=w["name"], description=w["description"], tags=w["tags"], tasks=w["tasks"])
                   for w in document["workflows"]],
        triggers=[pb.Trigger(name=t["name"], function=t["function"], workflow=t["workflow"],
                             options_json=json.dumps(t["options"]))
                  for t in document["triggers"]],
    )


class Workers:
    """Threads that run calls; answers go back to the loop through `deliver`."""

    def __init__(self, runner: TaskRunner, loop: asyncio.AbstractEventLoop, deliver: Any) -> None:
        self.runner = runner
        self._loop = loop
        self._deliver = deliver
        self._queue: queue.SimpleQueue[Call] = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self.running: dict[int, Call] = {}

    def submit(self, call: Call) -> None:
        self.running[call.request.call_id] = call
        with self._lock:
            start_one = self._idle == 0
            if not start_one:
                self._idle -= 1
        if start_one:
            threading.Thread(target=self._work, name="task", daemon=True).start()
        self._queue.put(call)

    def cancel(self, call_id: int) -> None:
        call = self.running.get(call_id)
        if call is not None and call.cancel is not None:
            call.cancel()

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            response = self.runner.run(call)
            self._loop.call_soon_threadsafe(self._finished, response)
            with self._lock:
                self._idle += 1

    def _finished(self, response: pb.CallResponse) -> None:
        self.running.pop(response.call_id, None)
        self._deliver(response)


class SandboxServicer(sandbox_pb2_grpc.SandboxServicer):
    def __init__(self, entry_module: str, roots: list[str], token: str, output_limit: int, max_context_bytes: int,
                 isolation: dict[str, str]) -> None:
        self.entry_module = entry_module
        self.roots = tuple(roots)
        self.token = token
        self.output_limit = output_limit
        self.max_context_bytes = max_context_bytes
        self.isolation = isolation
        self.imported = asyncio.Event()
        self.discovery: pb.DiscoverResponse | None = None
        self.runner: TaskRunner | None = None

    def import_package(self) -> None:
        """Import the entry module (on the loop's thread) and keep the answer for Discover."""
        try:
            import_entry_module(self.entry_module)
            document = describe(self.entry_module)
            tasks: dict[str, TaskSpec] = {spec.id: spec for spec in REGISTRY.all_tasks()}
            self.runner = TaskRunner(tasks, self.roots, self.output_limit, self.max_context_bytes)
            self.discovery = pb.DiscoverResponse(ok=True, discovery=discovery_message(document), pid=os.getpid(),
                                                 isolation=self.isolation)
        except BaseException as exc:  # noqa: BLE001 - the supervisor gets every import failure as data
            error = describe_exception(exc, self.roots)
            self.discovery = pb.DiscoverResponse(ok=False, error=error_message(error), pid=os.getpid(),
                                                 isolation=self.isolation)
        self.imported.set()

    async def _check_token(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(TOKEN_METADATA) != self.token:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not this sandbox's supervisor")

    async def Discover(self, request: pb.DiscoverRequest, context: grpc.aio.ServicerContext) -> pb.DiscoverResponse:
        await self._check_token(context)
        await self.imported.wait()
        assert self.discovery is not None
        return self.discovery

    async def Calls(self, request_iterator: AsyncIterator[pb.CallRequest],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CallResponse]:
        await self._check_token(context)
        await self.imported.wait()
        answers: asyncio.Queue[pb.CallResponse | None] = asyncio.Queue()
        if self.runner is None:
            return
        workers = Workers(self.runner, asyncio.get_running_loop(), answers.put_nowait)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    if request.cancel:
                        workers.cancel(request.call_id)
                    else:
                        workers.submit(Call(request))
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()


async def serve(socket_path: str, servicer: SandboxServicer, *, message_limit: int,
                before_import: Any = None) -> None:
    """Serve the link on `socket_path`; import the package once the socket is up; run until killed."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", message_limit),
                                      ("grpc.max_send_message_length", message_limit),
                                      ("grpc.so_reuseport", 0)])
    sandbox_pb2_grpc.add_SandboxServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    if before_import is not None:
        before_import()
    # Imported on the loop's thread with the loop paused: Discover answers after.
    servicer.import_package()
    await server.wait_for_termination()

