"""`cloaca-sandbox serve` and the client commands, as an operator and a user run them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import ROOT
from tests.projects import build
from tests.waiting import gone, wait_until

DEMO = '''
import os
import time
import cloaca

with cloaca.WorkflowBuilder("demo") as builder:
    @cloaca.task(id="greet")
    def greet(context):
        print("greeting", context.get("name", "world"))
        context.set("greeting", "hello " + context.get("name", "world"))
        return context

    @cloaca.task(id="shout", dependencies=["greet"])
    def shout(context):
        if context.get("quiet"):
            raise ValueError("asked to stay quiet")
        context.set("greeting", context.get("greeting").upper())
        return context

@cloaca.task(id="slow")
def slow(context):
    if context.get("marker"):
        # Tells a test the call is running: the test looks into the sandbox's own temp dir.
        open(os.path.join(os.environ["TMPDIR"], "running"), "w").close()
    time.sleep(float(context.get("seconds", 2)))
    context.set("finished", True)
    return context
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Daemon:
    """`cloaca-sandbox serve` in a subprocess, waited on through the health service."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        self.log = data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "serve", "--listen", self.address, "--data-dir", str(data_dir),
             "--grace", "20", *extra],
            cwd=ROOT, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.wait_serving()

    def wait_serving(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, self.log.read_text()
                time.sleep(0.05)

    def cli(self, *args: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLOACA_SANDBOX_SERVER": self.address}
        if api_key:
            env["CLOACA_SANDBOX_API_KEY"] = api_key
        return subprocess.run([sys.executable, "-m", "supervisor.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=120)

    def sandbox_pids(self) -> list[int]:
        try:
            return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("cli-packages"), "demo", DEMO)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(signal.SIGKILL)


def all_gone(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


def test_client_commands_output_and_exit_codes(daemons, demo_archive, tmp_path):
    daemon = Daemon(tmp_path / "data")
    daemons.append(daemon)
    uploaded = daemon.cli("upload", str(demo_archive), "--json")
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["state"] == "ready"

    listed = json.loads(daemon.cli("list", "--json").stdout)
    assert [(p["name"], p["state"]) for p in listed] == [("demo", "ready")]
    tasks = json.loads(daemon.cli("tasks", "demo", "--json").stdout)
    assert {t["id"] for t in tasks["tasks"]} == {"greet", "shout", "slow"}

    called = daemon.cli("call", "demo", "greet", "--context", '{"name": "ada"}', "--json")
    assert called.returncode == 0
    result = json.loads(called.stdout)
    assert result["status"] == "completed" and result["context"] == {"name": "ada", "greeting": "hello ada"}
    assert result["error"] is None and result["output"]["stdout"] == "greeting ada\n" and result["duration_ms"] > 0

    context_file = tmp_path / "context.json"
    context_file.write_text('{"name": "grace", "quiet": true}')
    failed = daemon.cli("run", "demo", "demo", "--context", f"@{context_file}", "--json")
    assert failed.returncode == 1
    run = json.loads(failed.stdout)
    assert run["status"] == "failed"
    assert [(t["task_id"], t["status"]) for t in run["tasks"]] == [("greet", "completed"), ("shout", "failed")]
    assert run["tasks"][1]["error"]["type"] == "ValueError"

    readable = daemon.cli("call", "demo", "shout", "--context", '{"greeting": "hi", "quiet": true}')
    assert readable.returncode == 1
    assert readable.stderr.startswith("Traceback (most recent call last):")
    assert 'File "demo/__init__.py"' in readable.stderr and "ValueError: asked to stay quiet" in readable.stderr

    timed_out = json.loads(daemon.cli("call", "demo", "slow", "--context", '{"seconds": 30}',
                                      "--timeout", "1", "--json").stdout)
    assert timed_out["error"]["kind"] == "timeout"

    missing = daemon.cli("call", "nope", "greet")
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    bad_context = daemon.cli("call", "demo", "greet", "--context", "{oops")
    assert bad_context.returncode == 2 and "not valid JSON" in bad_context.stderr

    assert daemon.cli("unload", "demo").returncode == 0
    assert daemon.cli("list", "--json").stdout.strip() == "[]"


def test_packages_survive_a_restart_even_after_sigkill(daemons, demo_archive, tmp_path):
    data = tmp_path / "data"
    first = Daemon(data)
    daemons.append(first)
    assert first.cli("upload", str(demo_archive)).returncode == 0
    sandboxes = first.sandbox_pids()
    assert sandboxes
    first.stop(signal.SIGKILL)
    wait_until(lambda: all_gone(sandboxes))  # the sandboxes followed their supervisor

    second = Daemon(data)
    daemons.append(second)
    wait_until(lambda: json.loads(second.cli("list", "--json").stdout)[0]["state"] == "ready")
    called = json.loads(second.cli("call", "demo", "greet", "--json").stdout)
    assert called["context"]["greeting"] == "hello world"
    assert second.stop(signal.SIGTERM) == 0

    third = Daemon(data)  # and again after a clean stop
    daemons.append(third)
    wait_until(lambda: json.loads(third.cli("list", "--json").stdout)[0]["state"] == "ready")


def test_sigterm_finishes_calls_under_way_and_leaves_no_sandbox(daemons, demo_archive, tmp_path):
    daemon = Daemon(tmp_path / "data")
    daemons.append(daemon)
    assert daemon.cli("upload", str(demo_archive)).returncode == 0
    sandboxes = daemon.sandbox_pids()
    env = {**os.environ, "CLOACA_SANDBOX_SERVER": daemon.address}
    pid = json.loads(daemon.cli("list", "--json").stdout)[0]["pid"]
    marker = Path(f"/proc/{pid}/root/sandbox/tmp/running")  # seen through the sandbox's own mounts
    context = json.dumps({"seconds": 3, "marker": True})
    in_flight = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "call", "demo", "slow", "--context",
                                  context, "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    wait_until(marker.exists)
    assert daemon.stop(signal.SIGTERM) == 0
    out, _ = in_flight.communicate(timeout=60)
    assert in_flight.returncode == 0, out
    assert json.loads(out)["context"]["finished"] is True
    assert all_gone(sandboxes)
    assert "shutting down" in daemon.log.read_text() and "stopped" in daemon.log.read_text()


def test_serve_options_from_the_environment(daemons, demo_archive, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("ops ops-key-0123456789abcdef\n")
    daemon = Daemon(tmp_path / "data", env={"CLOACA_SANDBOX_API_KEYS": str(keys),
                                            "CLOACA_SANDBOX_CALL_TIMEOUT": "1"})
    daemons.append(daemon)
    assert daemon.cli("list").returncode == 2  # keys are required now
    assert daemon.cli("upload", str(demo_archive), api_key="ops-key-0123456789abcdef").returncode == 0
    slow = json.loads(daemon.cli("call", "demo", "slow", "--json", api_key="ops-key-0123456789abcdef").stdout)
    assert slow["error"]["kind"] == "timeout"  # the 1 s call timeout came from the environment


def test_serve_refuses_open_listening_without_keys(tmp_path):
    refused = subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", "--listen", "0.0.0.0:0",
                              "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert refused.returncode == 2 and "without API keys" in refused.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls(daemons, demo_archive, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "supervisor.cli", "serve", "--listen", f"127.0.0.1:{port}",
                                "--data-dir", str(tmp_path / "data"), "--tls-cert", str(cert), "--tls-key", str(key)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        env = {**os.environ, "CLOACA_SANDBOX_SERVER": f"127.0.0.1:{port}", "CLOACA_SANDBOX_TLS_CA": str(cert)}

        def listed() -> bool:
            return subprocess.run([sys.executable, "-m", "supervisor.cli", "list"], env=env, cwd=ROOT,
                                  capture_output=True, timeout=60).returncode == 0
        wait_until(listed)
        plain = subprocess.run([sys.executable, "-m", "supervisor.cli", "list"], cwd=ROOT, capture_output=True,
                               env={**env, "CLOACA_SANDBOX_TLS_CA": ""}, timeout=60)
        assert plain.returncode == 2  # a plaintext client cannot talk to it
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
