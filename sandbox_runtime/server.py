"""The sandbox interpreter's main program: import one package, serve its tasks.

Started by the supervisor through the bootstrap in supervisor.interpreter:
    server ENTRY_MODULE SOCKET_PATH MAX_CONCURRENCY OUTPUT_LIMIT
It serves the Sandbox protocol (protos/sandbox_runtime/protocol/sandbox.proto) on a
Unix socket, imports the entry module, then runs task calls on a pool of
MAX_CONCURRENCY threads until the supervisor kills it.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

import grpc

from cloaca.errors import TaskError, error_from_exception
from cloaca.invoke import invoke_task
from cloaca.registry import REGISTRY, TaskSpec
from sandbox_runtime import capture
from sandbox_runtime.declarations import describe, discovery_message, import_entry_module
from sandbox_runtime.protocol import sandbox_pb2 as pb
from sandbox_runtime.protocol import sandbox_pb2_grpc

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_PR_SET_CHILD_SUBREAPER = 36


def error_message(error: TaskError) -> pb.TaskError:
    return pb.TaskError(kind=error.kind, type=error.type, message=error.message, traceback=error.traceback,
                        frames=[pb.Frame(file=f.file, line=f.line, function=f.function) for f in error.frames])


class SandboxServicer(sandbox_pb2_grpc.SandboxServicer):
    def __init__(self, entry_module: str, package_paths: list[str], max_concurrency: int, output_limit: int) -> None:
        self.entry_module = entry_module
        self.roots = tuple(package_paths)
        self.output_limit = output_limit
        self.pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="task")
        self.imported = asyncio.Event()
        self.discovery: pb.DiscoverResponse | None = None
        self.tasks: dict[str, TaskSpec] = {}

    def import_package(self) -> None:
        """Import the entry module (on the main thread) and keep the answer for Discover."""
        try:
            import_entry_module(self.entry_module)
            document = describe(self.entry_module)
            self.tasks = {spec.id: spec for spec in REGISTRY.all_tasks()}
            self.discovery = pb.DiscoverResponse(ok=True, discovery=discovery_message(document), pid=os.getpid())
        except BaseException as exc:  # noqa: BLE001 - the supervisor gets every import failure as data
            self.discovery = pb.DiscoverResponse(ok=False, error=error_message(error_from_exception(exc, self.roots)),
                                                 pid=os.getpid())
        self.imported.set()

    async def Discover(self, request: pb.DiscoverRequest, context: grpc.aio.ServicerContext) -> pb.DiscoverResponse:
        await self.imported.wait()
        assert self.discovery is not None
        return self.discovery

    def run_call(self, request: pb.CallRequest) -> pb.CallResponse:
        """Run one task call on a pool thread; never raises."""
        started = time.perf_counter()
        spec = self.tasks.get(request.task_id)
        with capture.capturing(self.output_limit) as output:
            if spec is None:
                error = TaskError("unknown_task", "LookupError", f"package has no task {request.task_id!r}")
                result = None
            else:
                try:
                    data = json.loads(request.context_json)
                    result = json.dumps(invoke_task(spec, data), allow_nan=False).encode()
                    error = None
                except BaseException as exc:  # noqa: BLE001 - a task's failure is an answer
                    result, error = None, error_from_exception(exc, self.roots)
        response = pb.CallResponse(
            call_id=request.call_id, ok=error is None,
            output=pb.CapturedOutput(stdout=output.stdout.getvalue(), stderr=output.stderr.getvalue(),
                                     stdout_dropped_bytes=output.stdout.dropped,
                                     stderr_dropped_bytes=output.stderr.dropped),
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )
        if error is None:
            response.context_json = result or b"{}"
        else:
            response.error.CopyFrom(error_message(error))
        return response

    async def Calls(self, request_iterator: AsyncIterator[pb.CallRequest],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[pb.CallResponse]:
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[pb.CallResponse | None] = asyncio.Queue()

        async def read_requests() -> None:
            running = []
            async for request in request_iterator:
                future = loop.run_in_executor(self.pool, self.run_call, request)
                future.add_done_callback(lambda done: answers.put_nowait(done.result()))
                running.append(future)
                running = [f for f in running if not f.done()]
            if running:
                await asyncio.wait(running)
            answers.put_nowait(None)

        reader = asyncio.ensure_future(read_requests())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()


def _become_subreaper() -> None:
    """Orphaned descendants reparent to us, so the supervisor finds them in our tree."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _die_with_supervisor() -> None:
    """Our stdin is a pipe the supervisor holds open: EOF means it is gone, so go too.

    Without this a supervisor killed with SIGKILL would leave every sandbox running.
    """
    while os.read(0, 4096):
        pass
    os.killpg(os.getpgid(0), signal.SIGKILL)


async def serve(entry_module: str, socket_path: str, max_concurrency: int, output_limit: int,
                package_paths: list[str]) -> None:
    servicer = SandboxServicer(entry_module, package_paths, max_concurrency, output_limit)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                      ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
    sandbox_pb2_grpc.add_SandboxServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_path}")
    await server.start()
    # Imported on the main thread, with the loop paused: Discover answers after.
    servicer.import_package()
    await server.wait_for_termination()


def main(argv: list[str], package_paths: list[str]) -> int:
    entry_module, socket_path, max_concurrency, output_limit = argv
    capture.install()
    _become_subreaper()
    threading.Thread(target=_die_with_supervisor, name="lifeline", daemon=True).start()
    asyncio.run(serve(entry_module, socket_path, int(max_concurrency), int(output_limit), package_paths))
    return 0
