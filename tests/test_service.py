"""The public gRPC service, driven through real gRPC clients on a real socket."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from supervisor.api import supervisor_pb2 as pb
from supervisor.client import SupervisorClient
from supervisor.edge.auth import KeyFileError, load_api_keys
from supervisor.edge.server import ConfigError, ServiceConfig, SupervisorServer
from tests.projects import build
from tests.waiting import wait_until

DEMO = '''
import os, time
import cloaca

VERSION = "{version}"

with cloaca.WorkflowBuilder("demo") as builder:
    @cloaca.task(id="echo")
    def echo(context):
        context.set("served_by", VERSION)
        return context

    @cloaca.task(id="fail", dependencies=["echo"])
    def fail(context):
        if context.get("fail", False):
            raise ValueError("asked to fail")
        context.set("passed", True)
        return context

@cloaca.task(id="slow")
def slow(context):
    time.sleep(float(context.get("seconds", 1)))
    context.set("served_by", VERSION)
    return context
'''

# Imports fine until the operator's configuration says it is broken.
FRAGILE = '''
import os
import cloaca
if os.environ.get("CLOACINA_VAR_FRAGILE_BROKEN"):
    raise RuntimeError("configuration is broken")

@cloaca.task(id="break_it")
def break_it(context):
    os._exit(1)
'''

KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef0"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("service-packages")
    return {
        "v1": build(root, "demo", DEMO.format(version="1"), version="1.0.0"),
        "v2": build(root, "demo", DEMO.format(version="2"), version="2.0.0"),
        "v1-changed": build(root / "changed", "demo", DEMO.format(version="1-changed"), version="1.0.0"),
        # Larger than gRPC's default 4 MiB message: the upload must stream.
        "big": build(root, "big", "import cloaca\n@cloaca.task(id='size')\ndef size(c):\n    pass\n",
                     blobs={"vendor/blob.bin": os.urandom(6 * 1024 * 1024)}),
        "fragile": build(root, "fragile", FRAGILE),
    }


def served_by(context_json: bytes) -> str:
    return json.loads(context_json)["served_by"]


@pytest.fixture
def keyed(start_server, tmp_path: Path) -> str:
    key_file = tmp_path / "keys"
    key_file.write_text("# tenants\n" + "".join(f"{tenant} {key}  # {tenant}'s key\n" for tenant, key in KEYS.items()))
    _, address = start_server(api_keys=key_file)
    return address


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_every_method_on_the_happy_path(start_server, archives):
    _, address = start_server()
    with SupervisorClient(address) as client:
        uploaded = client.upload(archives["v1"])
        assert (uploaded.name, uploaded.version, uploaded.state) == ("demo", "1.0.0", pb.Package.READY)
        assert uploaded.pid > 0 and uploaded.fingerprint.startswith("sha256:")
        assert [p.name for p in client.list()] == ["demo"]
        got = client.get("demo")
        assert {t.id for t in got.tasks} == {"echo", "fail", "slow"} and got.source == "upload"
        tasks = client.tasks("demo")
        assert {w.name for w in tasks.workflows} == {"demo", "demo_1"} or {w.name for w in tasks.workflows} >= {"demo"}

        called = client.call("demo", "echo", {"n": 1})
        assert called.status == pb.COMPLETED and called.duration_ms > 0
        assert called.context_json and served_by(called.context_json) == "1"

        run = client.run("demo", "demo", {"fail": False})
        assert run.status == pb.COMPLETED
        assert [(o.task_id, o.status, o.attempts) for o in run.tasks] == [("echo", pb.COMPLETED, 1),
                                                                           ("fail", pb.COMPLETED, 1)]
        client.unload("demo")
        assert client.list() == []


def test_task_failure_is_an_answer_not_a_grpc_error(start_server, archives):
    _, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        run = client.run("demo", "demo", {"fail": True})
        assert run.status == pb.FAILED
        failed = next(o for o in run.tasks if o.task_id == "fail")
        assert failed.status == pb.FAILED and failed.error.type == "ValueError"
        assert "asked to fail" in failed.error.traceback
        timed_out = client.call("demo", "slow", {"seconds": 30}, timeout=1)
        assert timed_out.status == pb.FAILED and timed_out.error.kind == "timeout"


def test_requests_that_cannot_be_served_get_status_codes(start_server, archives, tmp_path):
    _, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        assert code_of(lambda: client.call("nope", "echo")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: client.call("demo", "nope")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: client.get("nope")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: client.unload("nope")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: client.run("demo", "nope")) == grpc.StatusCode.NOT_FOUND
        assert code_of(lambda: client.call("demo", "echo", b"{not json")) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: client.call("demo", "echo", b"[1, 2]")) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: client.call("demo", "echo", timeout=-1)) == grpc.StatusCode.INVALID_ARGUMENT
        bogus = tmp_path / "bogus.cloacina"
        bogus.write_bytes(b"not an archive at all" * 40)
        with pytest.raises(grpc.RpcError) as refused:
            client.upload(bogus)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "[not_an_archive]" in refused.value.details()
        # Same name and version, different content: refused, and the loaded one keeps serving.
        with pytest.raises(grpc.RpcError) as conflict:
            client.upload(archives["v1-changed"])
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "new version" in conflict.value.details()
        assert served_by(client.call("demo", "echo").context_json) == "1"


def test_overload_is_resource_exhausted(start_server, archives):
    server, address = start_server(max_concurrency=1, max_queue=2)
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        # Fill the one slot and the queue of two; a call after that is refused at once.
        busy = [client.stub.CallTask.future(pb.CallTaskRequest(package="demo", task="slow",
                                                               context_json=b'{"seconds": 5}'))
                for _ in range(3)]
        sandbox = server.host.supervisor._get("default/demo").sandbox  # read from another thread: a counter
        wait_until(lambda: sandbox._admitted == 3, what="the busy calls being admitted")
        assert code_of(lambda: client.call("demo", "echo")) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert all(future.result().status == pb.COMPLETED for future in busy)


def test_unavailable_while_a_package_is_not_ready(start_server, archives, monkeypatch):
    _, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["fragile"])
        monkeypatch.setenv("CLOACINA_VAR_FRAGILE_BROKEN", "1")
        assert client.call("fragile", "break_it").error.kind == "crashed"
        wait_until(lambda: client.get("fragile").state == pb.Package.FAILED, what="the failed state")
        assert "configuration is broken" in client.get("fragile").error
        with pytest.raises(grpc.RpcError) as caught:
            client.call("fragile", "break_it")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "configuration is broken" in caught.value.details()


def test_upload_streams_archives_larger_than_one_message(start_server, archives):
    assert archives["big"].stat().st_size > 4 * 1024 * 1024
    _, address = start_server()
    with SupervisorClient(address) as client:
        assert client.upload(archives["big"]).state == pb.Package.READY


def test_keys_and_tenants(keyed, archives):
    with SupervisorClient(keyed) as anonymous:
        assert code_of(anonymous.list) == grpc.StatusCode.UNAUTHENTICATED
    with SupervisorClient(keyed, "wrong-key-0123456789") as wrong:
        assert code_of(wrong.list) == grpc.StatusCode.UNAUTHENTICATED
    with SupervisorClient(keyed, KEYS["alpha"]) as alpha, SupervisorClient(keyed, KEYS["beta"]) as beta:
        alpha.upload(archives["v1"])
        assert [p.name for p in alpha.list()] == ["demo"]
        assert beta.list() == []  # beta cannot see alpha's package...
        assert code_of(lambda: beta.call("demo", "echo")) == grpc.StatusCode.NOT_FOUND  # ...nor call it
        assert code_of(lambda: beta.call("alpha/demo", "echo")) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: beta.unload("alpha/demo")) == grpc.StatusCode.PERMISSION_DENIED
        assert alpha.call("alpha/demo", "echo").status == pb.COMPLETED  # naming one's own tenant is fine
        beta.upload(archives["v2"])  # the same name in another tenant is another package
        assert served_by(alpha.call("demo", "echo").context_json) == "1"
        assert served_by(beta.call("demo", "echo").context_json) == "2"


def test_health_and_reflection(start_server):
    _, address = start_server()
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "cloaca.sandbox.v1.Supervisor"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
                health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for answer in answers for service in answer.list_services_response.service}
        assert "cloaca.sandbox.v1.Supervisor" in names
        # Reflection v1 (what current grpcurl asks first): the same messages on the wire as v1alpha.
        v1 = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        answers = v1(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="cloaca.sandbox.v1.Supervisor")]))
        described = [answer.file_descriptor_response.file_descriptor_proto for answer in answers]
        assert described and described[0]  # the descriptor of the public API, from the protos alone


def test_a_stored_archive_that_changed_on_disk_is_not_loaded_again(start_server, archives):
    server, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
    data_dir = server.server.config.data_dir
    server.stop()
    stored = next((data_dir / "archives").rglob("*.cloacina"))
    stored.write_bytes(stored.read_bytes() + b"tampered")  # the host's disk, changed between runs
    _, address = start_server()
    with SupervisorClient(address) as client:
        listed = {package.name: package for package in client.list()}
        assert listed["demo"].state == pb.Package.FAILED
        assert "does not match its sha256" in listed["demo"].error
        with pytest.raises(grpc.RpcError) as caught:
            client.call("demo", "echo")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_replacing_a_version_under_continuous_calls_fails_no_call(start_server, archives):
    _, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        stop = threading.Event()
        answers: list[tuple[int, bytes]] = []
        errors: list[BaseException] = []

        def keep_calling() -> None:
            with SupervisorClient(address) as caller:
                while not stop.is_set():
                    try:
                        response = caller.call("demo", "echo")
                        answers.append((response.status, response.context_json))
                    except grpc.RpcError as exc:  # any refusal is a failed call
                        errors.append(exc)

        callers = [threading.Thread(target=keep_calling) for _ in range(4)]
        for thread in callers:
            thread.start()
        deadline = time.monotonic() + 60
        while len(answers) < 50:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.upload(archives["v2"]).version == "2.0.0"
        settled = len(answers)
        while len(answers) < settled + 50:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stop.set()
        for thread in callers:
            thread.join()
    assert errors == []
    assert all(status == pb.COMPLETED for status, _ in answers)
    assert served_by(answers[-1][1]) == "2"


def test_watched_directory_reconciles(start_server, archives, tmp_path):
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "demo.cloacina").write_bytes(archives["v1"].read_bytes())
    (watched / "broken.cloacina").write_bytes(b"garbage" * 100)
    _, address = start_server(packages=[watched], watch_settle=0.2)
    with SupervisorClient(address) as client:
        listed = {p.name: p for p in client.list()}
        assert listed["demo"].state == pb.Package.READY and listed["demo"].source.endswith("demo.cloacina")
        assert listed["broken.cloacina"].state == pb.Package.FAILED
        assert "not a package archive" in listed["broken.cloacina"].error
        assert client.call("demo", "echo").status == pb.COMPLETED  # the bad one blocks nothing

        (watched / "demo.cloacina").write_bytes(archives["v2"].read_bytes())  # changed: reloaded
        wait_until(lambda: client.get("demo").version == "2.0.0")
        (watched / "broken.cloacina").unlink()  # gone: its failure is forgotten
        (watched / "demo.cloacina").unlink()  # gone: unloaded
        wait_until(lambda: client.list() == [])


def test_refuses_to_listen_beyond_loopback_without_keys(tmp_path):
    with pytest.raises(ConfigError, match="without API keys"):
        SupervisorServer(ServiceConfig(listen="0.0.0.0:0", data_dir=tmp_path))


def test_key_file_errors_name_the_line(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("alpha alpha-key-0123456789abcdef\nbeta\n")
    with pytest.raises(KeyFileError, match="keys:2: expected 'TENANT KEY'"):
        load_api_keys(keys)
    keys.write_text("alpha short\n")
    with pytest.raises(KeyFileError, match="shorter than 16"):
        load_api_keys(keys)


def test_contexts_up_to_the_configured_size(start_server, archives):
    _, address = start_server(max_context_mib=8)
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        big = {"blob": "x" * (6 * 1024 * 1024)}
        assert client.call("demo", "echo", big).status == pb.COMPLETED
        too_big = {"blob": "x" * (10 * 1024 * 1024)}
        assert code_of(lambda: client.call("demo", "echo", too_big)) == grpc.StatusCode.RESOURCE_EXHAUSTED
