"""The supervisor's end of one sandbox's gRPC connection.

Every task call travels on one long-lived bidirectional stream, matched to
its answer by call_id; a reader thread resolves each call's Future. On this
machine that costs about half of a unary call (see benchmarks/).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Iterator

import grpc

from cloaca.errors import TaskError
from sandbox_runtime.protocol import sandbox_pb2 as pb
from sandbox_runtime.protocol import sandbox_pb2_grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_CLOSE = object()


class SandboxGone(Exception):
    """The sandbox died or was killed before answering; `error` says how."""

    def __init__(self, error: TaskError) -> None:
        super().__init__(str(error))
        self.error = error


class ChannelClosed(Exception):
    """The call was not sent: this channel's stream has ended. Safe to retry elsewhere."""


class SandboxChannel:
    def __init__(self, socket_path: str, on_stream_end: Callable[[], None] | None = None) -> None:
        self.socket_path = socket_path
        self._channel = grpc.insecure_channel(
            f"unix:{socket_path}",
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.enable_retries", 0),
                     # The first attempt usually precedes the socket; gRPC's default
                     # 1 s reconnect backoff would then dominate a sandbox's start.
                     ("grpc.initial_reconnect_backoff_ms", 10),
                     ("grpc.min_reconnect_backoff_ms", 10),
                     ("grpc.max_reconnect_backoff_ms", 100)],
        )
        self._stub = sandbox_pb2_grpc.SandboxStub(self._channel)
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[pb.CallResponse]] = {}
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._failure: TaskError | None = None
        self._stream_ended = False
        self._on_stream_end = on_stream_end

    def wait_ready(self, deadline: float, alive: Callable[[], bool]) -> bool:
        """Wait until the sandbox has bound its socket, while `alive()` holds and time remains.

        Watching the file, rather than the channel's connectivity, leaves no
        gRPC watcher thread behind to trip over the channel when it closes.
        """
        while time.monotonic() < deadline and alive():
            if os.path.exists(self.socket_path):
                return True
            time.sleep(0.005)
        return False

    def discover(self, timeout: float) -> pb.DiscoverResponse:
        return self._stub.Discover(pb.DiscoverRequest(), timeout=timeout, wait_for_ready=True)

    def open_calls(self) -> None:
        responses = self._stub.Calls(self._request_stream())
        self._reader = threading.Thread(target=self._read, args=(responses,), name="sandbox-calls", daemon=True)
        self._reader.start()

    def _request_stream(self) -> Iterator[pb.CallRequest]:
        while (item := self._requests.get()) is not _CLOSE:
            yield item  # type: ignore[misc]

    def _read(self, responses: Iterator[pb.CallResponse]) -> None:
        try:
            for response in responses:
                with self._lock:
                    future = self._pending.pop(response.call_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except grpc.RpcError as exc:
            log.debug("call stream ended: %s", exc)
        with self._lock:
            self._stream_ended = True
        if self._on_stream_end is not None:
            self._on_stream_end()

    @property
    def usable(self) -> bool:
        return not self._stream_ended and self._failure is None

    def submit(self, task_id: str, context_json: bytes) -> Future[pb.CallResponse]:
        """Send a call; raises ChannelClosed (nothing sent) once the stream has ended."""
        future: Future[pb.CallResponse] = Future()
        with self._lock:
            if not self.usable:
                raise ChannelClosed()
            call_id = next(self._ids)
            self._pending[call_id] = future
        self._requests.put(pb.CallRequest(call_id=call_id, task_id=task_id, context_json=context_json))
        return future

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)

    def fail_all(self, error: TaskError) -> None:
        """Answer every waiting call with `error`; later submits fail the same way."""
        with self._lock:
            self._failure = error
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(SandboxGone(error))

    def close(self) -> None:
        self._requests.put(_CLOSE)
        self._channel.close()
