"""Issue 7's attacks, each staged by a hostile tenant's package against a real service.

The hostile package (tests/hostile.py) runs one attack per task and answers with
what happened; the test gives it everything an attacker who knows the service's
layout would know (host paths, pids, ports). For each attack the test asserts
that it was refused, that the victim (another tenant's package, a secret in its
source) answers exactly as before from the same sandbox, and that the service
keeps serving. An attack that gets through is marked xfail(strict=True) with
what leaks, so it stays visible until the product closes it.

Two hosts carry the attacks: the gRPC service with API keys (tenants `mallory`
and `victim`, as in production), and an embedded Supervisor where per-package
limits (scratch size, pids, network) can be set.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sandbox_runtime.confinement import LAYERS
from supervisor.api import supervisor_pb2 as pb
from supervisor.client import SupervisorClient
from supervisor.config import IsolationLevel, PackageLimits, SupervisorConfig
from supervisor.edge.server import ConfigError, ServiceConfig, SupervisorServer
from supervisor.facade import Supervisor
from supervisor.sandboxes.isolation import SIMULATE_MISSING, IsolationUnavailable
from tests.hostile import FORGER, HOSTILE, VICTIM, VICTIM_SECRET
from tests.projects import build
from tests.servers import ServerThread
from tests.waiting import wait_until

KEYS = {"mallory": "mallory-key-5b2d8e61c0f94a37", "victim": "victim-key-93c07a1e6d2b4f58"}
SUPERVISOR_SECRET = f"supervisor-secret-{uuid.uuid4().hex}"  # in the supervisor's environment only
TENANT_VARIABLE = f"ledger-db-password-{uuid.uuid4().hex}"  # CLOACINA_VAR_LEDGER_DB_PASSWORD: the victim's config
SCRATCH_MIB = 16
MAX_PROCESSES = 32
X86_64 = platform.machine() == "x86_64"
REFUSED_ERRNOS = {errno.EPERM, errno.EACCES, errno.ENOENT, errno.EROFS, errno.EXDEV, errno.ESRCH,
                  errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOSYS, errno.ENOTTY,
                  errno.EAFNOSUPPORT, errno.ENOTDIR}


# --- packages -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("confinement-packages")
    return {
        "hostile": build(root, "mallory-tools", HOSTILE, module="mallory"),
        "roamer": build(root, "roamer", HOSTILE, module="roamer"),  # the same attacks, with network=True
        "victim": build(root, "ledger", VICTIM),
        "forger": build(root, "forger", FORGER),
    }


# --- reading what the hostile package reports ------------------------------------------


# Failures that are not an OSError but still mean "refused": a setuid helper that exits non-zero, a
# gRPC call whose connection was refused. Anything else (an ImportError, a bug in the hostile code)
# is not a refusal, so a broken attack cannot pass for a refused one.
REFUSED_OTHERWISE = {"CalledProcessError", "AioRpcError"}


def refused(result: dict[str, Any]) -> bool:
    """An `outcome` or a raw syscall's result that says the kernel (or the service) said no."""
    if "ret" in result:
        return result["ret"] == -1 and result["errno"] in REFUSED_ERRNOS
    if result["ok"]:
        return False
    return result["errno"] in REFUSED_ERRNOS or (result["errno"] is None and result["error"] in REFUSED_OTHERWISE)


def breaches(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The attempts that got through, for the assertion message."""
    return {name: result for name, result in results.items() if not refused(result)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def registry_rows(database: Path) -> list[tuple[Any, ...]]:
    """The registry's rows, read through a read-only connection beside the service's own."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return sorted(db.execute("SELECT tenant, name, version, sha256 FROM loaded UNION ALL "
                                 "SELECT tenant, name, version, sha256 FROM versions").fetchall())


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in_namespace(namespace: str) -> list[int]:
    """Host pids of every process in a pid namespace (the sandbox's whole tree, however it hid)."""
    found = []
    for pid in psutil.pids():
        if pid_namespace(pid) == namespace:
            found.append(pid)
    return found


@contextlib.contextmanager
def tcp_listener() -> Iterator[socket.socket]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    try:
        yield listener
    finally:
        listener.close()


@contextlib.contextmanager
def udp_listener() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


@contextlib.contextmanager
def abstract_listener() -> Iterator[str]:
    name = f"cloaca-redteam-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0" + name)
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield name
    finally:
        sock.close()


def accepted(listener: socket.socket) -> bytes | None:
    """What a connection already made to `listener` sent (None: nobody connected)."""
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return None
    with connection:
        connection.settimeout(5)
        return connection.recv(1024)


def received(sock: socket.socket) -> bytes | None:
    try:
        return sock.recv(1024)
    except BlockingIOError:
        return None


# --- the service: two tenants, API keys ---------------------------------------------------


@dataclass
class Service:
    server: ServerThread
    address: str
    data_dir: Path
    keys_file: Path
    mallory: SupervisorClient
    victim: SupervisorClient
    victim_archive_sha: str
    baseline: dict[str, Any] = field(default_factory=dict)
    victim_pid: int = 0

    @property
    def core(self) -> Any:
        return self.server.host.supervisor

    def loaded(self, key: str) -> Any:
        return self.core._get(key)  # read from another thread: attributes only

    @property
    def victim_sandbox(self) -> Any:
        return self.loaded("victim/ledger").sandbox

    def attack(self, task: str, **context: Any) -> dict[str, Any]:
        answer = self.mallory.call("mallory-tools", task, context, timeout=60)
        assert answer.status == pb.COMPLETED, answer.error.traceback or answer.error.message
        return json.loads(answer.context_json)

    def host_pids(self) -> dict[str, int]:
        incarnation = self.victim_sandbox.current
        return {"supervisor": os.getpid(), "zygote": self.core.services.launcher.zygote_pid,
                "victim": incarnation.serving_pid, "victim-outer": incarnation.process.pid}

    def assert_unharmed(self) -> None:
        """The victim answers as before from the same sandbox; the service and the attacker still serve."""
        answer = self.victim.call("ledger", "answer")
        assert answer.status == pb.COMPLETED and json.loads(answer.context_json) == self.baseline
        package = self.victim.get("ledger")
        assert (package.state, package.pid, package.restarts) == (pb.Package.READY, self.victim_pid, 0)
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING

        def attacker_answers() -> bool:
            try:
                return self.mallory.call("mallory-tools", "ping", timeout=10).status == pb.COMPLETED
            except grpc.RpcError:
                return False  # restarting

        wait_until(attacker_answers, 60, "the hostile package answering again")


@pytest.fixture(scope="module")
def service(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("confinement-service")
    keys_file = root / "keys"
    keys_file.write_text("".join(f"{tenant} {key}\n" for tenant, key in KEYS.items()))
    variables = root / "vars.toml"  # the victim's configuration, for the victim's tenant only
    variables.write_text(f'[tenants.victim]\nLEDGER_DB_PASSWORD = "{TENANT_VARIABLE}"\n')
    data_dir = root / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLOACA_REDTEAM_SUPERVISOR_SECRET", SUPERVISOR_SECRET)
        # The service's own CLOACINA_VAR_* belong to the default tenant, and to no keyed tenant.
        patch.setenv("CLOACINA_VAR_LEDGER_DB_PASSWORD", TENANT_VARIABLE)
        server = ServerThread(ServiceConfig(listen="127.0.0.1:0", data_dir=data_dir, api_keys=keys_file,
                                            vars=variables, scratch_mib=SCRATCH_MIB, memory_limit_mib=256,
                                            call_timeout=60))
        try:
            address = server.start()
            with SupervisorClient(address, KEYS["mallory"]) as mallory, \
                    SupervisorClient(address, KEYS["victim"]) as victim:
                # The victim first: the zygote has served its start request before it forks the attacker.
                uploaded = victim.upload(archives["victim"])
                mallory.upload(archives["hostile"])
                running = Service(server, address, data_dir, keys_file, mallory, victim,
                                  sha256_of(archives["victim"]), victim_pid=uploaded.pid)
                running.baseline = json.loads(victim.call("ledger", "answer").context_json)
                assert running.baseline["answer"] == 42 and running.baseline["patched"] == "no"
                assert running.baseline["db_password_set"] is True  # its tenant's variable reached it
                yield running
        finally:
            server.stop(grace=1)


# --- the embedded supervisor: per-package limits --------------------------------------------


@dataclass
class Embedded:
    supervisor: Supervisor
    archives: dict[str, Path]
    baseline: dict[str, Any] = field(default_factory=dict)
    victim_pid: int = 0

    def load_hostile(self) -> None:
        self.supervisor.load(self.archives["hostile"], PackageLimits(scratch_mib=SCRATCH_MIB,
                                                                     max_processes=MAX_PROCESSES))

    def attack(self, task: str, package: str = "mallory-tools", **context: Any) -> dict[str, Any]:
        result = self.supervisor.call(package, task, context, timeout=60)
        assert result.ok, result.error.traceback or result.error.message
        return result.context

    def assert_unharmed(self) -> None:
        assert self.supervisor.call("ledger", "answer").context == self.baseline
        info = self.supervisor.package("ledger")
        assert (info.state, info.pid, info.restarts) == ("ready", self.victim_pid, 0)

        def attacker_answers() -> bool:
            try:
                return self.supervisor.call("mallory-tools", "ping", timeout=10).ok
            except Exception:  # noqa: BLE001 - restarting
                return False

        wait_until(attacker_answers, 60, "the hostile package answering again")


@pytest.fixture(scope="module")
def embedded(archives: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    config = SupervisorConfig(work_dir=tmp_path_factory.mktemp("confinement-embedded") / "work", call_timeout=60,
                              memory_limit_mib=256, restart_backoff_initial=0.05)
    with Supervisor(config) as supervisor:
        host = Embedded(supervisor, archives)
        host.victim_pid = supervisor.load(archives["victim"]).pid
        host.load_hostile()
        host.baseline = supervisor.call("ledger", "answer").context
        yield host


# === 10. what holds is visible ===========================================================


def layers_all_on(isolation: dict[str, str]) -> dict[str, str]:
    """The layers that are not on (as root, `user` is n/a: each sandbox has a uid of its own instead)."""
    missing = {}
    for layer in LAYERS:
        state = isolation.get(layer, "absent")
        if state.startswith("on") or (layer == "user" and os.geteuid() == 0 and state.startswith("n/a")):
            continue
        missing[layer] = state
    return missing


def test_every_layer_is_on_by_default_in_get_package(service):
    """GetPackage's isolation map (what a tenant sees) has every layer on, on this machine."""
    for client, name in ((service.mallory, "mallory-tools"), (service.victim, "ledger")):
        isolation = dict(client.get(name).isolation)
        assert layers_all_on(isolation) == {}, isolation


def test_every_layer_is_on_by_default_in_package_info(embedded):
    info = embedded.supervisor.package("mallory-tools")
    assert layers_all_on(info.isolation) == {}, info.isolation
    assert f"at most {MAX_PROCESSES}" in info.isolation["pids"]


# === 1. reading what belongs to others ===================================================


def test_cannot_read_other_tenants_source_keys_registry_or_archives(service):
    """Another package's extracted source (by host path and through /proc), the API-keys file, the
    registry database and the stored archives: nothing of the data dir is visible."""
    victim = service.victim_sandbox
    source = victim.package.root / "ledger" / "__init__.py"
    assert VICTIM_SECRET in source.read_text()  # the target is real
    pids = service.host_pids()
    paths = [
        str(source), str(victim.package.root), str(victim.package.root.parent),
        f"/proc/{pids['victim']}/root/package/ledger/__init__.py",
        f"/proc/{pids['victim-outer']}/root{source}",
        f"/proc/{pids['supervisor']}/root{source}", f"/proc/{pids['zygote']}/root{source}",
        "/proc/1/root/package/ledger/__init__.py",
        str(service.keys_file), str(service.data_dir), str(service.data_dir / "registry.db"),
        str(service.data_dir / "registry.db-wal"), str(service.data_dir / "archives"),
        str(service.data_dir / "archives" / "victim" / f"{service.victim_archive_sha}.cloacina"),
        str(service.data_dir / "work"), str(service.data_dir / "work" / "packages"),
        f"/proc/{pids['supervisor']}/cmdline", f"/proc/{pids['supervisor']}/fd",
    ]
    report = service.attack("read_paths", paths=paths, markers=[VICTIM_SECRET, KEYS["victim"], "ledger"])
    assert breaches(report["results"]) == {}
    service.assert_unharmed()


def test_cannot_read_the_supervisors_environment(service):
    """/proc/<ppid>/environ, /proc/1/environ and every /proc/*/environ it can see hold nothing of the
    supervisor's environment, and no process it sees is the supervisor (whose command line would name
    the keys file)."""
    supervisor_cmdline = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").decode()
    report = service.attack("scan_proc", markers=[SUPERVISOR_SECRET, str(service.keys_file), supervisor_cmdline])
    assert report["found"] == []
    assert report["ppid"] == 0  # its parent is outside its pid namespace
    visible = {int(pid) for pid in report["processes"]}
    assert not visible & {pid for pid in service.host_pids().values() if pid > 64}
    assert not any(key.startswith("CLOACA_REDTEAM") for key in report["environ_keys"])
    service.assert_unharmed()


def test_cannot_read_another_tenants_configuration_variables(service):
    report = service.attack("scan_proc", markers=[TENANT_VARIABLE])
    assert report["found"] == []


# === 2. other sandboxes: their sockets, their memory =====================================


def test_cannot_reach_another_sandboxs_socket(service):
    """The victim's sandbox socket by its host path, through /proc, or any socket it can find;
    abstract Unix sockets of the host."""
    incarnation = service.victim_sandbox.current
    assert Path(incarnation.link.socket_path).exists()  # the target is real
    pids = service.host_pids()
    with abstract_listener() as name:
        report = service.attack("network", unix_paths=[
            incarnation.link.socket_path, str(incarnation.host_dir),
            f"/proc/{pids['victim']}/root/run/sandbox/s", f"/proc/{pids['victim-outer']}/root"
            f"{incarnation.link.socket_path}"], abstract=[name])
    assert breaches(report["results"]) == {}
    service.assert_unharmed()


def test_cannot_read_or_trace_other_processes(service):
    """/proc/<pid>/mem, PTRACE_ATTACH, PTRACE_SEIZE and process_vm_readv on the victim's sandbox, the
    supervisor and the zygote; ptrace of its own child too."""
    report = service.attack("other_processes", host_pids=service.host_pids())
    results = dict(report["results"])
    traceme = results.pop("PTRACE_TRACEME")
    # Its own child's memory, through /proc: the same uid in the same sandbox, nothing crossed.
    results.pop("/proc/<own child>/mem")
    assert breaches(results) == {}
    assert refused(traceme), traceme
    service.assert_unharmed()


@pytest.mark.skipif(not hasattr(socket, "AF_VSOCK"), reason="no AF_VSOCK on this host")
def test_vsock_is_closed_without_network(service):
    try:
        held = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        held.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
    except OSError as exc:
        pytest.skip(f"this host cannot bind a vsock port: {exc}")
    with held:
        port = held.getsockname()[1]
        report = service.attack("network", vsock_port=port)
    service.assert_unharmed()
    assert refused(report["results"]["vsock socket"]), report["results"]
    assert refused(report["results"]["vsock bind to the host's port"])


def test_zygote_memory_holds_no_other_sandboxs_secrets(service):
    """A sandbox's memory is the zygote's at fork: it must not hold another sandbox's start request
    (its link token, its host paths). Its own token is there: the scan works."""
    # A fresh incarnation: the earlier attacks' requests (which carried the victim's host paths) gone.
    before = service.mallory.get("mallory-tools").pid
    assert service.mallory.call("mallory-tools", "crash", timeout=60).error.kind == "crashed"
    wait_until(lambda: service.mallory.get("mallory-tools").state == pb.Package.READY
               and service.mallory.get("mallory-tools").pid not in (0, before), 60, "the attacker's restart")
    victim = service.victim_sandbox
    own = dict(service.loaded("mallory/mallory-tools").sandbox.current.link._metadata)["x-sandbox-token"]
    token = dict(victim.current.link._metadata)["x-sandbox-token"]
    secrets = [token, f"/packages/{victim.package.root.name}", f"/run/{victim.current.host_dir.name}"]

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    report = service.attack("memory_residue", digests=[digest(own), *map(digest, secrets)])
    assert own in report["found"]
    assert not set(report["found"]) & set(secrets)
    service.assert_unharmed()


# === 3. rewriting what others run ========================================================


def test_cannot_rewrite_other_tenants_code_the_registry_or_the_shared_runtime(service):
    """The victim's extracted source and stored archive, the registry, the keys; the shared runtime
    (cloaca/__init__.py, the directories it is imported from) and the stdlib; its own package tree."""
    import cloaca
    import sandbox_runtime

    victim = service.victim_sandbox
    source = victim.package.root / "ledger" / "__init__.py"
    archive = service.data_dir / "archives" / "victim" / f"{service.victim_archive_sha}.cloacina"
    runtime_dir = Path(cloaca.__file__).parent.parent
    watched = [source, archive, service.keys_file, Path(cloaca.__file__), Path(sandbox_runtime.__file__),
               Path(os.__file__)]
    before = {path: sha256_of(path) for path in watched}
    rows_before = registry_rows(service.data_dir / "registry.db")
    assert ("victim", "ledger", "1.0.0", service.victim_archive_sha) in rows_before
    targets = [[str(source), "append"], [str(archive), "append"], [str(service.data_dir / "registry.db"), "probe"],
               [str(service.keys_file), "probe"], [str(victim.package.root / "ledger"), "create"],
               [str(service.data_dir / "archives"), "create"], [str(Path(cloaca.__file__)), "probe"],
               [str(runtime_dir), "create"],
               [str(Path(sandbox_runtime.__file__).parent / "zygote.py"), "probe"]]
    report = service.attack("write_paths", targets=targets)
    assert len(report["results"]) > len(targets) + 10
    assert breaches(report["results"]) == {}
    assert {path: sha256_of(path) for path in watched} == before
    assert registry_rows(service.data_dir / "registry.db") == rows_before
    service.assert_unharmed()


# === 4. signals ==========================================================================


def test_cannot_kill_the_supervisor_or_another_tenant(service):
    """os.kill(os.getppid(), 9), kill(1), a scan of pids 1..65536 with signal 0 then SIGKILL to what
    it finds, and kill/killpg/pidfd_open of the victim's sandbox, the supervisor and the zygote."""
    pids = service.host_pids()
    report = service.attack("signals", host_pids=pids, scan_up_to=65536)
    assert not set(report["visible"]) & set(pids.values())
    for name, result in report["results"].items():
        if name.startswith(("kill(", "killpg(", "pidfd_open(")) and "getppid" not in name and "(1," not in name:
            assert not result["ok"] and result["errno"] == errno.ESRCH, (name, result)
    assert psutil.pid_exists(pids["zygote"]) and psutil.pid_exists(pids["victim"])
    service.assert_unharmed()


# === 5. the network ======================================================================


def test_no_network_by_default(service):
    """Loopback (the public API's port, a TCP and a UDP listener of the test), the Internet, and the
    API itself without a key: nothing leaves its network namespace."""
    with tcp_listener() as tcp, udp_listener() as udp, abstract_listener() as name:
        report = service.attack(
            "network", api_port=service.server.server.port, abstract=[name], greeting="hello from mallory",
            tcp={"public API": ["127.0.0.1", service.server.server.port],
                 "test listener": ["127.0.0.1", tcp.getsockname()[1]], "internet": ["1.1.1.1", 53]},
            udp={"internet dns": ["1.1.1.1", 53]})
        # UDP to 127.0.0.1 goes to the sandbox's own loopback: what matters is that ours got nothing.
        loopback_udp = service.attack("network", udp={"test listener": ["127.0.0.1", udp.getsockname()[1]]},
                                      greeting="hello from mallory")
        assert accepted(tcp) is None and received(udp) is None
    assert loopback_udp["results"]  # it tried
    assert breaches(report["results"]) == {}
    service.assert_unharmed()


def test_network_opt_in_reaches_a_local_listener_and_nothing_else(embedded):
    """PackageLimits(network=True): outbound TCP works (to a listener of the test's: this machine has no
    Internet); abstract Unix sockets of the host stay out of reach (Landlock's scope)."""
    embedded.supervisor.load(embedded.archives["roamer"], PackageLimits(network=True))
    try:
        assert embedded.supervisor.package("roamer").isolation["network"] == "off (the package has the host's network)"
        with tcp_listener() as tcp, abstract_listener() as name:
            report = embedded.attack("network", package="roamer", greeting="hello from roamer", abstract=[name],
                                     tcp={"test listener": ["127.0.0.1", tcp.getsockname()[1]]})
            results = report["results"]
            assert results[f"tcp test listener 127.0.0.1:{tcp.getsockname()[1]}"]["ok"], results
            assert accepted(tcp) == b"hello from roamer"
            assert refused(results[f"abstract @{name}"]), results
            assert refused(results["raw socket"])
    finally:
        embedded.supervisor.unload("roamer")
    embedded.assert_unharmed()


def test_network_opt_in_cannot_drive_a_keyless_service(archives, tmp_path):
    """A sandbox with the host's network reaches loopback, where a keyless service answers anyone:
    that combination is refused outright (with keys, the port answers but wants a key)."""
    with pytest.raises(ConfigError, match="--network gives sandboxes the host's network.*--api-keys"):
        SupervisorServer(ServiceConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data", network=True))
    assert not (tmp_path / "data").exists()  # refused before anything was made


# === 6. disk, cgroups, and what outlives an unload =======================================


def test_scratch_is_capped(embedded):
    """TMPDIR, HOME, /dev/shm and /tmp share one tmpfs of PackageLimits(scratch_mib=16): 64 MiB into
    each stops at ENOSPC."""
    report = embedded.attack("fill", mib=64)
    for directory, result in report["results"].items():
        assert result["error"] is not None and result["error"]["errno"] == errno.ENOSPC, (directory, result)
        assert result["written_mib"] <= SCRATCH_MIB, (directory, result)
    embedded.assert_unharmed()


def test_every_writable_place_is_capped(embedded):
    report = embedded.attack("fill", mib=64, dirs=["/run/sandbox"])
    embedded.assert_unharmed()
    result = report["results"]["/run/sandbox"]
    assert result["error"] is not None and result["error"]["errno"] == errno.ENOSPC, result
    assert result["written_mib"] <= SCRATCH_MIB, result


def test_nothing_outlives_an_unload(embedded, tmp_path):
    """A process that tries to move into the root cgroup, in a session of its own, and links in the
    socket dir aimed at host files: after unload nothing of the sandbox runs, its cgroups are gone,
    and the host files are untouched (the cleanup follows no link)."""
    supervisor = embedded.supervisor
    incarnation = supervisor.core._get("mallory-tools").sandbox.current
    uid, namespace = incarnation.plan.uid, pid_namespace(incarnation.serving_pid)
    cgroup_dirs = list(incarnation.cgroup._paths) if incarnation.cgroup is not None else []
    host_dir = incarnation.host_dir
    assert namespace is not None and uid is not None and cgroup_dirs
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("host data")
    (tmp_path / "sentinel-dir").mkdir()
    (tmp_path / "sentinel-dir" / "file").write_text("more host data")
    try:
        report = embedded.attack("leave_daemon", seconds=60)
        for escape in (report["escape"], report["own_escape"]):
            cgroups = escape.pop("/proc/self/cgroup")["detail"]
            assert all(line.endswith(":/") for line in cgroups.split()), cgroups  # its own cgroup namespace
            assert breaches(escape) == {}
        links = embedded.attack("links", host_targets=[str(sentinel)], host_dirs=[str(tmp_path / "sentinel-dir")])
        tricks = {name: result for name, result in links["results"].items()
                  if not name.startswith(("symlink /run/sandbox", "symlink in scratch"))}
        assert breaches(tricks) == {}
        survivors = processes_in_namespace(namespace)
        assert len(survivors) >= 2  # the sandbox and its daemon
        assert all(psutil.Process(pid).uids().real == uid for pid in survivors)
        for pid in survivors:  # as the host sees them: still in the sandbox's own memory and pids groups
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                _, controllers, path = line.split(":", 2)
                if {"memory", "pids"} & set(controllers.split(",")):
                    assert path.endswith("/" + cgroup_dirs[0].name), (pid, line)
        supervisor.unload("mallory-tools")
        wait_until(lambda: processes_in_namespace(namespace) == [], 30, "every process of the sandbox gone")
        # Nor anywhere else under this supervisor's zygote with the sandbox's uid (other supervisors on
        # this machine hand out the same uids, so the whole process table is not ours to judge).
        zygote = psutil.Process(supervisor.core.services.launcher.zygote_pid)
        assert [child.pid for child in zygote.children(recursive=True) if child.uids().real == uid] == []
        wait_until(lambda: not any(path.exists() for path in cgroup_dirs), 30, "the sandbox's cgroups removed")
        assert not host_dir.exists()
        assert sentinel.read_text() == "host data"
        assert (tmp_path / "sentinel-dir" / "file").read_text() == "more host data"
    finally:
        if "mallory-tools" not in [info.name for info in supervisor.packages()]:
            embedded.load_hostile()
    embedded.assert_unharmed()


# === 7. a fork bomb ======================================================================


def test_fork_bomb_stops_at_the_pids_limit(embedded):
    """Forks until refused: it stops short of PackageLimits(max_processes=32) with EAGAIN; the sandbox
    still answers, and the machine can still start processes."""
    report = embedded.attack("fork_bomb", limit=200)
    assert report["error"] is not None and report["error"]["errno"] == errno.EAGAIN, report
    assert report["forked"] < MAX_PROCESSES
    assert subprocess.run([sys.executable, "-c", "pass"], timeout=60).returncode == 0
    embedded.assert_unharmed()
    assert embedded.attack("ping")["pong"] is True


# === 8. system calls that undo confinement ===============================================


@pytest.mark.skipif(not X86_64, reason="the hostile package's syscall numbers are x86_64's")
def test_confinement_cannot_be_undone(service):
    """mount, unshare(CLONE_NEWUSER) and the other namespaces, clone(CLONE_NEWUSER), setns, bpf, keyctl,
    perf_event_open, kexec, chroot, pivot_root, modules, io_uring, userfaultfd, ...: all refused."""
    report = service.attack("syscalls")
    results = report["results"]
    assert len(results) > 40
    assert {name: r for name, r in results.items() if not (r["ret"] == -1 and r["errno"] in
                                                              (errno.EPERM, errno.ENOSYS))} == {}
    assert results["clone3"]["errno"] == errno.ENOSYS  # so the C library falls back to clone, which is filtered
    status = report["status"]
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == int(status["CapBnd"], 16) == 0
    service.assert_unharmed()


# === more: what else an attacker would try ===============================================


def test_machine_soft_spots_are_closed(service):
    """/etc/shadow, /dev (mem, kmsg, disks, tty), /proc/sys and sysrq writes, TIOCSTI, mknod, setuid
    binaries (mounted nosuid, under no_new_privs: `su` never makes it root)."""
    report = service.attack("machine")
    results = dict(report["results"])
    assert results.pop("open for write /dev/null")["ok"]  # the harness can tell a success
    assert set(results.pop("dev entries")["detail"]) <= {"null", "zero", "full", "random", "urandom", "fd", "stdin",
                                                          "stdout", "stderr", "shm"}
    assert breaches(results) == {}
    assert report["no_new_privs"] == "1"
    assert report["setuid"] and all(report["setuid"].values()), report["setuid"]  # every one on a nosuid mount
    for command, run in report["runs"].items():
        assert not run["ok"] or run["detail"]["stdout"].strip() != "0", (command, run)
    service.assert_unharmed()


def test_link_tricks_in_writable_places(service):
    """Symlinks and hard links from its scratch and socket dirs into its package tree, and back."""
    report = service.attack("links")
    results = report["results"]
    assert results["symlink in scratch to own tree"]["ok"]  # allowed, and harmless:
    assert refused(results["write through that symlink"])
    for name in ("hard link own tree -> scratch", "hard link own tree -> socket dir", "hard link scratch -> own tree",
                 "rename scratch -> own tree"):
        assert refused(results[name]), (name, results[name])
    service.assert_unharmed()


# === 9. strict mode ======================================================================


def test_strict_isolation_refuses_a_sandbox_missing_a_layer(archives, tmp_path, monkeypatch):
    monkeypatch.setenv(SIMULATE_MISSING, "landlock")
    config = SupervisorConfig(work_dir=tmp_path / "work", isolation=IsolationLevel.STRICT, memory_limit_mib=256)
    with Supervisor(config) as supervisor:
        with pytest.raises(IsolationUnavailable, match=r"landlock off \(simulated missing\)"):
            supervisor.load(archives["hostile"])
        assert supervisor.packages() == []
        staging = tmp_path / "work" / "packages"
        assert not staging.exists() or not any(staging.iterdir())


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    """A supervisor at the default level on a machine that (as far as it knows) has no Landlock.
    The simulation is read once, by the probe at start: the variable is set only around it."""
    config = SupervisorConfig(work_dir=tmp_path_factory.mktemp("confinement-degraded") / "work", memory_limit_mib=256)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SIMULATE_MISSING, "landlock")
        supervisor = Supervisor(config)
    with supervisor:
        yield supervisor


def test_default_isolation_runs_without_the_missing_layer_and_says_so(degraded, archives, tmp_path):
    """The same simulation at the default level: the sandbox starts, PackageInfo.isolation shows Landlock
    off, and the namespaces alone still keep the host's files out of reach."""
    secret = tmp_path / "host-secret"
    secret.write_text(SUPERVISOR_SECRET)
    info = degraded.load(archives["hostile"])
    assert info.isolation["landlock"].startswith("off"), info.isolation
    assert set(layers_all_on(info.isolation)) == {"landlock"}
    report = degraded.call("mallory-tools", "read_paths", {"paths": [str(secret), str(tmp_path)],
                                                           "markers": [SUPERVISOR_SECRET]}).context
    assert breaches(report["results"]) == {}
    import cloaca

    written = degraded.call("mallory-tools", "write_paths", {"targets": [[cloaca.__file__, "probe"]]}).context
    assert breaches(written["results"]) == {}


def test_isolation_report_cannot_be_forged_by_the_package(degraded, archives):
    info = degraded.load(archives["forger"])
    assert info.isolation["landlock"].startswith("off"), info.isolation


# === more: one host, two supervisors =====================================================


def test_sandboxes_of_two_supervisors_share_no_uid(service, archives, tmp_path):
    victim_uid = service.victim_sandbox.current.plan.uid
    assert json.loads(service.victim.call("ledger", "watch").context_json)["inotify"] == "ok"
    config = SupervisorConfig(work_dir=tmp_path / "work", memory_limit_mib=256, call_timeout=60)
    with Supervisor(config) as other:
        other.load(archives["hostile"])
        try:
            hoard = other.call("mallory-tools", "hoard_inotify", {"limit": 512}).context
            watch = json.loads(service.victim.call("ledger", "watch").context_json)
        finally:
            other.call("mallory-tools", "release")  # held for as short a time as possible
    service.assert_unharmed()
    assert hoard["held"] <= 512
    assert watch["inotify"] == "ok", (hoard, victim_uid)
    assert hoard["uid"] != victim_uid
