"""The zygote: a warm interpreter that forks a sandbox per request.

Started once by the supervisor (`python -I -S -B`, the runtime dir on its path),
it imports everything a sandbox needs before package code (asyncio, grpc and
grpc.aio, the protocol, orjson, cloaca, the runtime, the confinement layers),
freezes that heap out of the cyclic GC's reach (`gc.freeze()`), and then serves
requests on its control socket, an inherited SOCK_SEQPACKET:

    supervisor ──spawn {id, spec} + [output fd]──▶ zygote ──fork──▶ sandbox (start.run)
               ◀──spawned {id, pid} + [pidfd]─────
               ◀──exited {pid, status}────────────   (it reaps every sandbox)
               ◀──ready {pid, python}────────────    (once, after the imports)

It stays single-threaded and never creates a gRPC object, so forking it is safe
for grpc and lets each child unshare a user namespace. When the supervisor goes
(EOF on the control socket) it kills every sandbox and exits; a sandbox whose
zygote dies gets SIGKILL through its parent-death signal.
"""

from __future__ import annotations

import array
import gc
import json
import os
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

_MAX_MESSAGE = 1024 * 1024


def preload() -> None:
    """Import what every sandbox imports before package code, so children share it."""
    import asyncio  # noqa: F401
    import concurrent.futures  # noqa: F401
    import json  # noqa: F401
    import traceback  # noqa: F401

    import grpc  # noqa: F401
    import grpc.aio  # noqa: F401
    import orjson  # noqa: F401
    import simdjson  # noqa: F401

    import cloaca  # noqa: F401
    from sandbox_runtime import capture, confinement, link, start, tasks  # noqa: F401
    from sandbox_runtime.confinement import filesystem, kernel, landlock_rules, seccomp_filter  # noqa: F401

    try:
        seccomp_filter.prepare()  # libseccomp loaded and the filter built once, for every child
    except (ImportError, OSError):
        pass  # the probe reports the seccomp layer missing


def _send(control: socket.socket, message: dict[str, Any], fds: list[int] = ()) -> None:  # type: ignore[assignment]
    data = json.dumps(message).encode()
    if fds:
        control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        control.send(data)


def _receive(control: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    data, ancillary, _, _ = control.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(16 * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if not data:
        return None, fds
    return json.loads(data), fds


def _become_sandbox(spec_data: dict[str, Any], output_fd: int) -> NoReturn:
    """In the forked child: a clean process for start.run, then never back into the zygote."""
    try:
        from sandbox_runtime.start import StartSpec, run

        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") < 65536 else 65536)
        run(StartSpec.from_dict(spec_data))
    except BaseException as exc:  # noqa: BLE001
        try:
            os.write(2, f"sandbox start failed: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(70)


class Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def serve(self) -> NoReturn:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown())
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(self._wakeup_r, selectors.EVENT_READ, "children")
        _send(self.control, {"op": "ready", "pid": os.getpid(), "python": sys.version.split()[0]})
        while True:
            for key, _ in selector.select():
                if key.data == "children":
                    try:
                        while os.read(self._wakeup_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                else:
                    self.handle_request()

    def handle_request(self) -> None:
        try:
            message, fds = _receive(self.control)
        except (ConnectionError, OSError):
            message, fds = None, []
        if message is None:
            self.shutdown()
        try:
            if message.get("op") == "spawn":
                self.spawn(message["id"], message["spec"], fds[0] if fds else -1)
        finally:
            for fd in fds:
                os.close(fd)

    def spawn(self, request_id: int, spec: dict[str, Any], output_fd: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become_sandbox(spec, output_fd)
        self.children.add(pid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            _send(self.control, {"op": "spawned", "id": request_id, "pid": pid})
            return
        try:
            _send(self.control, {"op": "spawned", "id": request_id, "pid": pid}, [pidfd])
        finally:
            os.close(pidfd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            try:
                _send(self.control, {"op": "exited", "pid": pid, "status": status})
            except OSError:
                pass

    def shutdown(self) -> NoReturn:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(0)


def main(argv: list[str]) -> NoReturn:
    """`python -I -S -B ... sandbox_runtime.zygote FD`: FD is the inherited control socket."""
    control = socket.socket(fileno=int(argv[0]))
    preload()
    gc.collect()
    gc.freeze()
    Zygote(control).serve()
