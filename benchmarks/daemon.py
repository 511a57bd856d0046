"""`cloaca-sandbox serve` in its own process, for benchmarks that go through the public service."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common import ROOT, free_port


@contextlib.contextmanager
def daemon(data_dir: Path, *extra: str, env: dict[str, str] | None = None
           ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start the service, wait until its health says SERVING, yield (address, process); SIGTERM at the end.

    `env` adds to the environment (CLOACA_SANDBOX_REGISTRY, say: a URL kept out of the process list)."""
    address = f"127.0.0.1:{free_port()}"
    log_path = data_dir.parent / f"serve-{address.split(':')[1]}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "serve", "--listen", address,
                                    "--data-dir", str(data_dir), "--memory-limit", "0", *extra],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                                health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(log_path.read_text())
                    time.sleep(0.05)
            yield address, process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
