"""The sandbox's end of its link to the supervisor: the Sandbox gRPC service.

    supervisor ──Calls stream──▶ reader (event loop) ──SimpleQueue──▶ worker threads
               ◀─────────────── writer (event loop) ◀─call_soon_threadsafe── (answers)
                                     └─ a proven-quick sync task, when nothing else runs: inline

One grpc.aio server on the loop thread serves `Discover` (answered once the
entry module is imported) and one long-lived `Calls` stream. The reader hands
each request to a pool of worker threads (a new one whenever all are busy); each
answer comes back to the loop with a single `call_soon_threadsafe` and goes out
on the stream. Every RPC must carry the incarnation's token; without it the RPC
is refused.

Handing a call to a thread and back costs about 100 us here, a third of the
whole round trip. So a sync task that has proven quick (its last runs each took
under INLINE_LIMIT) runs on the loop itself when no other call is running. One
that turns out slow, even once, goes to the workers from then on; a call that
arrives during an inline run waits at most that long.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from typing import Any, AsyncIterator

import grpc

from cloaca.registry import REGISTRY, TaskSpec
from cloaca.secrets import StaticSecrets, install_resolver
from sandbox_runtime.markers import READY_MARK
from sandbox_runtime.declarations import PackageIdentity, describe, discovery_message, load_package
from sandbox_runtime.protocol import sandbox_pb2 as pb
from sandbox_runtime.protocol import sandbox_pb2_grpc
from sandbox_runtime.tasks import Call, TaskRunner, describe_exception, error_message

TOKEN_METADATA = "x-sandbox-token"


INLINE_LIMIT = 0.002  # seconds: a sync task whose runs all stay under this may run on the loop
INLINE_AFTER = 3  # quick runs on the workers before a task is trusted to run inline


class LinkSlot:
    """A call's concurrency slot, held by the supervisor: a deferred task gives it back over the link.

    `release` tells the supervisor (DEFERRED), which admits another call meanwhile;
    `reacquire` asks for one (WANTS_SLOT) and blocks the task's thread until the
    supervisor answers `resume`.
    """

    def __init__(self, call_id: int, loop: asyncio.AbstractEventLoop, deliver: Any) -> None:
        self.call_id = call_id
        self._loop = loop
        self._deliver = deliver
        self.resumed = threading.Event()

    def _tell(self, progress: int) -> None:
        self._loop.call_soon_threadsafe(self._deliver, pb.CallResponse(call_id=self.call_id, progress=progress))

    def release(self) -> None:
        self.resumed.clear()
        self._tell(pb.DEFERRED)

    def reacquire(self) -> None:
        self._tell(pb.WANTS_SLOT)
        self.resumed.wait()


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
        self._quick_runs: dict[str, int] = {}  # task id -> quick runs in a row; -1 once it was slow

    def _record(self, task_id: str, seconds: float) -> None:
        if self._quick_runs.get(task_id, 0) >= 0:
            self._quick_runs[task_id] = self._quick_runs.get(task_id, 0) + 1 if seconds < INLINE_LIMIT else -1

    def run_or_submit(self, call: Call) -> pb.CallResponse | None:
        """Run a proven-quick call inline and return its answer; else hand it to a worker (None)."""
        task_id = call.request.task_id
        if not self.running and self._quick_runs.get(task_id, 0) >= INLINE_AFTER \
                and self.runner.may_run_inline(task_id):
            started = time.perf_counter()
            response = self.runner.run(call)
            self._record(task_id, time.perf_counter() - started)
            return response
        self.submit(call)
        return None

    def submit(self, call: Call) -> None:
        call.slot = LinkSlot(call.request.call_id, self._loop, self._deliver)
        self.running[call.request.call_id] = call
        with self._lock:
            start_one = self._idle == 0
            if not start_one:
                self._idle -= 1
        if start_one:
            threading.Thread(target=self._work, name="task", daemon=True).start()
        self._queue.put(call)

    def resume(self, call_id: int) -> None:
        call = self.running.get(call_id)
        if call is not None and isinstance(call.slot, LinkSlot):
            call.slot.resumed.set()

    def cancel(self, call_id: int) -> None:
        call = self.running.get(call_id)
        if call is not None and call.cancel is not None:
            call.cancel()

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            started = time.perf_counter()
            response = self.runner.run(call)
            self._loop.call_soon_threadsafe(self._finished, call.request.task_id, response,
                                            time.perf_counter() - started)
            with self._lock:
                self._idle += 1

    def _finished(self, task_id: str, response: pb.CallResponse, seconds: float) -> None:
        self.running.pop(response.call_id, None)
        self._record(task_id, seconds)
        self._deliver(response)


class SandboxServicer(sandbox_pb2_grpc.SandboxServicer):
    def __init__(self, entry_module: str, identity: PackageIdentity, roots: list[str], token: str,
                 output_limit: int, max_context_bytes: int, isolation: dict[str, str]) -> None:
        self.entry_module = entry_module
        self.identity = identity
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
            load_package(self.entry_module, self.identity)
            document = describe(self.entry_module)
            tasks: dict[str, TaskSpec] = {spec.id: spec for spec in REGISTRY.all_tasks()}
            self.runner = TaskRunner(tasks, self.roots, self.output_limit, self.max_context_bytes,
                                     triggers=dict(REGISTRY.triggers))
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

    async def ProvideSecrets(self, request: pb.Secrets, context: grpc.aio.ServicerContext) -> pb.SecretsAck:
        await self._check_token(context)
        secrets = {name: dict(value.fields) for name, value in request.secrets.items()}
        install_resolver(StaticSecrets(secrets, declared=list(request.declared)))
        return pb.SecretsAck()

    async def Discover(self, request: pb.DiscoverRequest, context: grpc.aio.ServicerContext) -> pb.DiscoverResponse:
        await self._check_token(context)
        await self.imported.wait()
        assert self.discovery is not None
        return self.discovery

    async def Calls(self, request_iterator: AsyncIterator[pb.CallRequest],
                    context: grpc.aio.ServicerContext) -> None:
        """Read calls and answer them on the same stream, in whatever order they finish."""
        await self._check_token(context)
        await self.imported.wait()
        if self.runner is None:
            return
        loop = asyncio.get_running_loop()
        write_lock = asyncio.Lock()

        async def send(answer: pb.CallResponse) -> None:
            async with write_lock:
                await context.write(answer)

        def deliver(answer: pb.CallResponse) -> None:
            loop.create_task(send(answer))

        workers = Workers(self.runner, loop, deliver)
        while True:
            request = await context.read()
            if request is grpc.aio.EOF:
                break
            if request.cancel:
                workers.cancel(request.call_id)
                continue
            if request.resume:
                workers.resume(request.call_id)
                continue
            answer = workers.run_or_submit(Call(request))
            if answer is not None:
                await send(answer)


async def serve(socket_path: str, servicer: SandboxServicer, *, message_limit: int,
                before_import: Any = None) -> None:
    """Serve the link on `socket_path`; import the package once the socket is up; run until killed."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", message_limit),
                                      ("grpc.max_send_message_length", message_limit),
                                      ("grpc.so_reuseport", 0)])
    sandbox_pb2_grpc.add_SandboxServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    os.write(1, READY_MARK)  # the supervisor connects now, without polling for the socket
    if before_import is not None:
        before_import()
    # Imported on the loop's thread with the loop paused: Discover answers after.
    servicer.import_package()
    await server.wait_for_termination()

