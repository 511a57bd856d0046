"""Every call gets the right answer: tasks that misbehave in ways that used to lose answers,
timeouts that fail only their own call, clients that leave, tenants that flood, bad contexts."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supervisor.api import supervisor_pb2 as pb
from supervisor.client import SupervisorClient
from supervisor.config import PackageLimits, SupervisorConfig
from supervisor.core import AsyncSupervisor
from supervisor.edge.server import ServiceConfig
from supervisor.facade import Supervisor
from supervisor.results import InvalidContextError
from tests.projects import build
from tests.servers import ServerThread
from tests.waiting import wait_gone, wait_until

AWKWARD = '''
import asyncio, os, socket, subprocess, sys, time
import cloaca

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")

@cloaca.task(id="echo")
def echo(context):
    context.set("echoed", True)
    return context

@cloaca.task(id="unprintable")
def unprintable(context):
    raise Unprintable()

@cloaca.task(id="surrogate_print")
def surrogate_print(context):
    print("half a pair: \\ud800")
    context.set("printed", True)
    return context

@cloaca.task(id="surrogate_raise")
def surrogate_raise(context):
    raise ValueError("bad \\udcff byte")

@cloaca.task(id="bytes_to_stdout")
def bytes_to_stdout(context):
    sys.stdout.buffer.write(b"raw \\xff bytes\\n")
    sys.stdout.write(b"not text")

@cloaca.task(id="big_answer")
def big_answer(context):
    context.set("blob", "x" * int(context.get("size")))
    return context

@cloaca.task(id="slow")
def slow(context):
    time.sleep(float(context.get("seconds", 1)))
    context.set("slept", True)
    return context

@cloaca.task(id="spin")
def spin(context):
    while True:
        pass

@cloaca.task(id="async_sleep")
async def async_sleep(context):
    await asyncio.sleep(float(context.get("seconds", 30)))
    context.set("slept", True)
    return context

@cloaca.task(id="cut_the_link")
def cut_the_link(context):
    # Shut down every socket this process holds: its link to the supervisor ends, the process lives.
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                probe = socket.socket(fileno=os.dup(int(name)))
                probe.shutdown(socket.SHUT_RDWR)
                probe.close()
        except OSError:
            pass
    time.sleep(5)

@cloaca.task(id="escape")
def escape(context):
    # A daemon in its own session that keeps the sandbox's stdout open, then the sandbox crashes.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    context.set("child", child.pid)
    return context

@cloaca.task(id="crash")
def crash(context):
    os._exit(3)

@cloaca.task(id="fan_out")
def fan_out(context):
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                for _ in range(int(context.get("children")))]
    context.set("children", [child.pid for child in children])
    return context
'''


@pytest.fixture(scope="module")
def awkward(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("awkward"), "awkward", AWKWARD)


@pytest.fixture(scope="module")
def supervisor(awkward: Path) -> Supervisor:
    with Supervisor(SupervisorConfig(call_timeout=60, max_context_mib=1, restart_backoff_initial=0.05)) as running:
        running.load(awkward, PackageLimits(max_concurrency=4))
        yield running


def test_an_exception_whose_str_raises_is_answered(supervisor):
    error = supervisor.call("awkward", "unprintable").error
    assert error.kind == "exception" and error.type.endswith("Unprintable")
    assert supervisor.call("awkward", "echo").ok


def test_lone_surrogates_in_output_and_messages_are_answered(supervisor):
    printed = supervisor.call("awkward", "surrogate_print")
    assert printed.ok and "half a pair: \\ud800" in printed.output.stdout
    error = supervisor.call("awkward", "surrogate_raise").error
    assert error.type == "ValueError" and error.message == "bad \\udcff byte"


def test_bytes_written_to_stdout(supervisor):
    result = supervisor.call("awkward", "bytes_to_stdout")
    assert result.error.type == "TypeError" and "must be str, not bytes" in result.error.message
    assert "raw \\xff bytes" in result.output.stdout  # sys.stdout.buffer takes bytes, as it should


def test_an_answer_over_the_limit_is_its_own_kind_and_the_sandbox_keeps_serving(supervisor):
    pid = supervisor.package("awkward").pid
    error = supervisor.call("awkward", "big_answer", {"size": 2 * 1024 * 1024}).error
    assert error.kind == "context_too_large" and "byte limit" in error.message
    assert supervisor.call("awkward", "big_answer", {"size": 1000}).ok
    assert supervisor.package("awkward").pid == pid


def test_a_link_that_breaks_while_the_sandbox_lives_is_replaced(supervisor):
    pid = supervisor.package("awkward").pid
    result = supervisor.call("awkward", "cut_the_link")
    assert result.error.kind == "crashed" and "link" in result.error.message
    wait_gone(pid)
    assert supervisor.call("awkward", "echo").ok  # later calls do not wait out their deadlines
    assert supervisor.package("awkward").state == "ready"


def test_a_timeout_fails_only_its_own_call(supervisor):
    old = supervisor.package("awkward").pid
    with ThreadPoolExecutor(max_workers=2) as pool:
        patient = pool.submit(supervisor.call, "awkward", "slow", {"seconds": 3})
        wait_until(lambda: supervisor.core._get("awkward").sandbox.current.running >= 1)
        timed_out = supervisor.call("awkward", "spin", timeout=1)
        assert timed_out.error.kind == "timeout"
        assert supervisor.call("awkward", "echo").ok  # a replacement took over at once
        assert patient.result().ok  # the other caller's call finished in the old sandbox
    wait_gone(old)  # which was killed once that call ended


def test_a_queued_call_that_times_out_touches_no_sandbox(awkward, tmp_path):
    with Supervisor(SupervisorConfig(restart_backoff_initial=0.05)) as supervisor:
        supervisor.load(awkward, PackageLimits(max_concurrency=1))
        pid = supervisor.package("awkward").pid
        with ThreadPoolExecutor(max_workers=1) as pool:
            busy = pool.submit(supervisor.call, "awkward", "slow", {"seconds": 3})
            wait_until(lambda: supervisor.core._get("awkward").sandbox.current.running == 1)
            queued = supervisor.call("awkward", "echo", timeout=0.5)
            assert queued.error.kind == "timeout" and "never ran" in queued.error.message
            assert busy.result().ok
        assert supervisor.package("awkward").pid == pid


def test_an_escaped_child_holding_the_output_does_not_wedge_a_restart(awkward, monkeypatch):
    # No cgroup and no pid namespace: only the sandbox's subreaper role finds the daemon.
    monkeypatch.setenv("CLOACA_SANDBOX_SIMULATE_MISSING_LAYERS", "cgroup,pid,mount")
    with Supervisor(SupervisorConfig(restart_backoff_initial=0.05)) as supervisor:
        supervisor.load(awkward)
        child = supervisor.call("awkward", "escape").context["child"]
        assert psutil.pid_exists(child)
        assert supervisor.call("awkward", "crash").error.kind == "crashed"
        wait_gone(child)
        wait_until(lambda: supervisor.package("awkward").state == "ready", what="the restart")
        assert supervisor.call("awkward", "echo").ok


def test_memory_is_the_sandboxs_own_not_summed_rss(supervisor):
    fanned = supervisor.call("awkward", "fan_out", {"children": 20})
    assert fanned.ok
    pid = supervisor.package("awkward").pid
    summed_rss = sum(p.memory_info().rss for p in [psutil.Process(pid), *psutil.Process(pid).children(True)])
    wait_until(lambda: supervisor.package("awkward").memory_bytes > 0, what="a memory sample")
    reported = supervisor.package("awkward").memory_bytes
    assert reported < summed_rss / 3, (reported, summed_rss)
    supervisor.call("awkward", "crash")  # takes the children along
    wait_until(lambda: supervisor.package("awkward").state == "ready")


def test_bad_contexts_are_refused_with_a_reason(supervisor):
    cases = {
        b'{"a": NaN}': "not valid JSON",
        b'{"a": "\xff"}': "not valid JSON",
        b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}": "nested more than 1024 levels",
        b'{"a": 18446744073709551616}': "64-bit integer",
        b'{"a": 1' + b"0" * 5000 + b"}": "not valid JSON",
        b"[1, 2]": "must be a JSON object",
    }
    for context, reason in cases.items():
        with pytest.raises(InvalidContextError, match=reason):
            supervisor.call("awkward", "echo", context)
    deep = supervisor.call("awkward", "echo", b'{"deep": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    assert deep.ok and deep.context_json.count(b"[") == 1000  # as deep as it may be, there and back


def test_close_racing_a_load_leaves_nothing_running(awkward):
    async def main() -> tuple[int, list[Path]]:
        supervisor = AsyncSupervisor()
        await supervisor.start()
        services = supervisor.services
        load = asyncio.ensure_future(supervisor.load(awkward))
        await asyncio.sleep(0)  # the load is under way
        await supervisor.close()
        with pytest.raises(Exception):
            await load
        assert supervisor.packages() == []
        groups = [parent[0] for parent in (services.cgroups.memory_parent, services.cgroups.pids_parent) if parent]
        return services.launcher.zygote_pid, groups

    zygote, groups = asyncio.run(main())
    wait_gone(zygote)  # every sandbox it forked dies with it
    assert [group for group in groups if group.exists()] == []  # and no process is left in their cgroups


def test_shutdown_does_not_wait_for_a_draining_replacement(awkward, tmp_path):
    supervisor = Supervisor(SupervisorConfig(call_timeout=300, stop_grace=1))
    supervisor.load(awkward)
    with ThreadPoolExecutor(max_workers=1) as pool:
        long_call = pool.submit(supervisor.call, "awkward", "slow", {"seconds": 250})
        wait_until(lambda: supervisor.core._get("awkward").sandbox.current.running == 1)
        supervisor.load(awkward)  # the old version drains, with up to the call timeout to finish
        closing = threading.Thread(target=supervisor.close)
        closing.start()
        closing.join(60)
        assert not closing.is_alive()  # close gave the drain its own grace, not 300 s
        assert long_call.result(10).error.kind == "unavailable"


def test_the_async_core_needs_nothing_from_the_default_executor(awkward):
    async def main() -> list[bool]:
        loop = asyncio.get_running_loop()
        starved = ThreadPoolExecutor(max_workers=1)
        loop.set_default_executor(starved)
        blocker = threading.Event()
        loop.run_in_executor(None, blocker.wait)  # the host program's executor is busy
        try:
            async with AsyncSupervisor() as supervisor:
                await supervisor.load(awkward)
                results = await asyncio.gather(*(supervisor.call("awkward", "echo") for _ in range(4)))
                return [result.ok for result in results]
        finally:
            blocker.set()

    assert asyncio.run(main()) == [True] * 4


# --- through the public service ------------------------------------------------------------

KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef0"}


@pytest.fixture
def service(awkward: Path, tmp_path: Path):
    keys = tmp_path / "keys"
    keys.write_text("".join(f"{tenant} {key}\n" for tenant, key in KEYS.items()))
    server = ServerThread(ServiceConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", api_keys=keys,
                                        max_concurrency=1, max_queue=16, tenant_requests=4, tenant_uploads=2,
                                        upload_idle_timeout=2))
    address = server.start()
    for tenant in KEYS:
        with SupervisorClient(address, KEYS[tenant]) as client:
            client.upload(awkward)
    yield server, address
    server.stop()


def test_timeout_seconds_that_is_not_a_number_of_seconds(service):
    _, address = service
    with SupervisorClient(address, KEYS["alpha"]) as client:
        for timeout in (float("nan"), float("inf"), -1.0, 0.0):
            with pytest.raises(grpc.RpcError) as caught:
                client.call("awkward", "echo", timeout=timeout)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, timeout
        with pytest.raises(grpc.RpcError) as caught:
            client.call("awkward", "echo", b'{"a": ' + b"[" * 1100 + b"]" * 1100 + b"}")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.call("awkward", "echo").status == pb.COMPLETED


def _call_with_deadline(client: SupervisorClient, task: str, seconds: float) -> str:
    """A call whose client deadline is the least of its limits: the client's own deadline, or the
    service's timeout answer given right at it, whichever reaches the client first."""
    try:
        answer = client.stub.CallTask(pb.CallTaskRequest(package="awkward", task=task),
                                      metadata=client.metadata, timeout=seconds)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
        return "deadline exceeded"
    assert answer.error.kind == "timeout", answer
    return "timeout answer"


def test_a_client_that_leaves_frees_its_slot_at_once(service):
    server, address = service
    with SupervisorClient(address, KEYS["alpha"]) as client:
        pid = client.get("awkward").pid
        _call_with_deadline(client, "async_sleep", 1)  # an async task: cancelled in the sandbox
        assert client.call("awkward", "echo", timeout=30).status == pb.COMPLETED  # the one slot is free
        assert client.get("awkward").pid == pid  # and the sandbox was not replaced for it
        _call_with_deadline(client, "spin", 1)  # a sync task cannot be cancelled: its sandbox is replaced
        assert client.call("awkward", "echo", timeout=30).status == pb.COMPLETED
        wait_gone(pid)


def test_one_tenants_flood_never_refuses_another_tenant(service):
    _, address = service
    with SupervisorClient(address, KEYS["alpha"]) as alpha, SupervisorClient(address, KEYS["beta"]) as beta:
        flood = [alpha.stub.CallTask.future(pb.CallTaskRequest(package="awkward", task="slow",
                                                               context_json=b'{"seconds": 2}'),
                                            metadata=alpha.metadata) for _ in range(6)]
        assert beta.call("awkward", "echo").status == pb.COMPLETED
        with grpc.insecure_channel(address) as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest()).status == \
                health_pb2.HealthCheckResponse.SERVING
        codes = []
        for future in flood:
            try:
                future.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 2 and codes.count(grpc.StatusCode.OK) == 4


def test_stalled_uploads_time_out_and_block_no_other_tenant(service, awkward):
    _, address = service
    release = threading.Event()

    def stalling():
        yield pb.UploadPackageRequest(chunk=b"BZh9")
        release.wait(30)

    with SupervisorClient(address, KEYS["alpha"]) as alpha, SupervisorClient(address, KEYS["beta"]) as beta:
        stalled = [alpha.stub.UploadPackage.future(stalling(), metadata=alpha.metadata) for _ in range(2)]
        assert beta.upload(awkward).state == pb.Package.READY  # another tenant uploads meanwhile
        for future in stalled:
            with pytest.raises(grpc.RpcError) as caught:
                future.result(timeout=60)
            assert caught.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert "stalled" in caught.value.details() or "uploads in progress" in caught.value.details()
        release.set()
        assert json.loads(alpha.call("awkward", "echo").context_json) == {"echoed": True}
