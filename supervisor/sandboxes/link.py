"""The supervisor's end of one sandbox's link: a grpc.aio channel on the sandbox's Unix socket.

Every task call travels on one long-lived bidirectional `Calls` stream, matched
to its answer by call_id: `call` writes the request and awaits a future that the
stream's reader task resolves. When the stream ends for any reason (the process
died, the sandbox closed it, the connection dropped) the link is broken: no call
is sent on it again, and the owner of the sandbox is told. The owner answers the
calls still waiting once it knows why: the process's death (and its cause) if it
died, else a broken link, after which it kills and replaces that incarnation
rather than leaving later calls to wait out their deadlines.

Before any RPC the supervisor checks its peer: the process listening on the
socket must be the sandbox it launched (SO_PEERCRED), and every RPC carries the
incarnation's token, without which the sandbox answers nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import struct
from typing import Callable

import grpc
import psutil

from sandbox_runtime.protocol import sandbox_pb2 as pb
from sandbox_runtime.protocol import sandbox_pb2_grpc

log = logging.getLogger(__name__)

TOKEN_METADATA = "x-sandbox-token"


class LinkBroken(Exception):
    """The call stream has ended: this call was not sent."""


class PeerMismatch(Exception):
    """Something other than our sandbox listens on its socket."""


def peer_credentials(socket_path: str) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process listening on a Unix socket, as this process sees them."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(5)
        probe.connect(socket_path)
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


async def check_peer(socket_path: str, launched_pid: int, expected_uid: int, deadline: float) -> int:
    """The pid serving the socket, after checking it is `launched_pid` or its child, with the right uid.

    The socket file appears when the sandbox binds, a moment before it listens:
    a refused connection is tried again until `deadline` (loop time).
    """
    loop = asyncio.get_running_loop()
    while True:
        try:
            pid, uid, _ = peer_credentials(socket_path)
            break
        except ConnectionRefusedError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.002)
    if uid != expected_uid:
        raise PeerMismatch(f"the sandbox socket is served by uid {uid}, not the sandbox's uid {expected_uid}")
    if pid != launched_pid:
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.Error:
            parent = -1
        if parent != launched_pid:
            raise PeerMismatch(f"the sandbox socket is served by pid {pid}, which is not the sandbox "
                               f"(pid {launched_pid}) or its child")
    return pid


class SandboxLink:
    def __init__(self, socket_path: str, token: str, message_limit: int,
                 on_broken: Callable[[], None]) -> None:
        self.socket_path = socket_path
        self._metadata = ((TOKEN_METADATA, token),)
        self._channel = grpc.aio.insecure_channel(
            f"unix:{socket_path}",
            options=[("grpc.max_receive_message_length", message_limit),
                     ("grpc.max_send_message_length", message_limit),
                     ("grpc.enable_retries", 0),
                     ("grpc.initial_reconnect_backoff_ms", 10),
                     ("grpc.min_reconnect_backoff_ms", 10),
                     ("grpc.max_reconnect_backoff_ms", 100)])
        self._stub = sandbox_pb2_grpc.SandboxStub(self._channel)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[pb.CallResponse]] = {}
        self._progress: dict[int, Callable[[int], None]] = {}  # call id -> what a deferral step does
        self._stream: grpc.aio.StreamStreamCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._on_broken = on_broken
        self.broken: str | None = None  # why the stream ended, once it has
        self._closed = False


    async def discover(self, timeout: float) -> pb.DiscoverResponse:
        return await self._stub.Discover(pb.DiscoverRequest(), timeout=timeout, metadata=self._metadata,
                                         wait_for_ready=True)

    def open_calls(self) -> None:
        self._stream = self._stub.Calls(metadata=self._metadata)
        self._reader = asyncio.get_running_loop().create_task(self._read(self._stream))

    async def _read(self, stream: grpc.aio.StreamStreamCall) -> None:
        reason = "the sandbox closed its call stream"
        try:
            while True:
                response = await stream.read()
                if response is grpc.aio.EOF:
                    break
                if response.progress != pb.ANSWER:
                    on_progress = self._progress.get(response.call_id)
                    if on_progress is not None:
                        on_progress(response.progress)
                    continue
                self._progress.pop(response.call_id, None)
                future = self._pending.pop(response.call_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except grpc.aio.AioRpcError as exc:
            reason = f"the call stream broke: {exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            reason = "the link was closed"
        self._break(reason)

    def _break(self, reason: str) -> None:
        """No more answers will come. The calls still waiting are answered by the sandbox's owner,
        which first learns whether the process died (and why) or the link broke on its own."""
        if self.broken is not None:
            return
        self.broken = reason
        if not self._closed:
            self._on_broken()

    @property
    def usable(self) -> bool:
        return self.broken is None and self._stream is not None

    async def call(self, task_id: str, context_json: bytes, on_progress: Callable[[int], None] | None = None,
                   trigger: str = "") -> tuple[int, asyncio.Future[pb.CallResponse]]:
        """Send a call (a task's, or a trigger's poll); returns its id and the future of its answer.
        LinkBroken if the link is down (nothing sent).

        `on_progress(step)` hears the steps of a deferral (pb.DEFERRED, pb.WANTS_SLOT) before the answer.
        """
        if not self.usable:
            raise LinkBroken(self.broken or "the call stream is not open")
        call_id = next(self._ids)
        future: asyncio.Future[pb.CallResponse] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        if on_progress is not None:
            self._progress[call_id] = on_progress
        try:
            async with self._write_lock:
                assert self._stream is not None
                await self._stream.write(pb.CallRequest(call_id=call_id, task_id=task_id, context_json=context_json,
                                                        trigger=trigger))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            self._pending.pop(call_id, None)
            self._progress.pop(call_id, None)
            raise LinkBroken(f"could not send the call: {exc}") from None
        return call_id, future

    def resume(self, call_id: int) -> None:
        """A deferred call has its slot again: let it go on."""
        self._send_soon(pb.CallRequest(call_id=call_id, resume=True))

    async def provide_secrets(self, secrets: dict[str, dict[str, str]], declared: list[str], timeout: float) -> None:
        message = pb.Secrets(declared=declared)
        for name, fields in secrets.items():
            message.secrets[name].fields.update(fields)
        await self._stub.ProvideSecrets(message, timeout=timeout, metadata=self._metadata)

    def cancel(self, call_id: int) -> None:
        """Ask the sandbox to cancel a call (its answer, "cancelled" or not, still resolves the future)."""
        if call_id in self._pending:
            self._send_soon(pb.CallRequest(call_id=call_id, cancel=True))

    def _send_soon(self, request: pb.CallRequest) -> None:
        if self.usable:
            asyncio.get_running_loop().create_task(self._send(request))

    async def _send(self, request: pb.CallRequest) -> None:
        try:
            async with self._write_lock:
                assert self._stream is not None
                await self._stream.write(request)
        except Exception:  # noqa: BLE001 - the link broke: its owner hears of it from the reader
            pass

    def fail_all(self, error: Exception) -> None:
        self._progress.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
        if self._stream is not None:
            self._stream.cancel()
        await self._channel.close(grace=None)
