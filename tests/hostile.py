"""The hostile tenant's package for tests/test_confinement.py, and the victim tenant's.

`HOSTILE` is the source of a package whose every task tries one attack from
issue 7 and answers with what happened, as data: each attempt is an
`outcome` ({"ok": true, ...} when the attack got through; {"ok": false,
"errno": 13, "error": "EACCES", "detail": ...} when it was refused). The test
passes what an attacker who knows the service's layout would know (host paths,
pids, ports) in the call's context. Every attempt is bounded: sizes in MiB,
counts, and timeouts of at most a few seconds, so a hole shows as a finding,
not as a hung or damaged machine. Writes aimed at the shared runtime, the
interpreter and the host never change a byte: they only open for append (an
open that succeeds is already the hole) or create a fresh file and remove it
again. Only the victim's own copies (its extracted tree and stored archive,
made for the test) and the attacker's own tree are really appended to.

Attacks that need a child process or a single thread run in a fresh interpreter
(`script`): in the sandbox's own process os.fork() runs grpc's fork handlers.
"""

HOSTILE = r'''
"""Each task tries one attack on the service, and answers with what happened."""

import glob
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import functools

import cloaca


def answers(task):
    """A task answers with its (changed) context: returning None would mean "no change"."""
    @functools.wraps(task)
    def answering(context):
        task(context)
        return context
    return answering


# What this package shares with the fresh, single-threaded interpreters it starts (`script`). A task's
# own process runs grpc's threads, and os.fork() there runs grpc's fork handlers: each child starts
# grpc's threads again (about six tasks a child) and breaks once the task has used grpc itself. So
# every attack that needs a child of its own, or a single thread, runs in a fresh interpreter.
PRELUDE = """
import ctypes, errno, json, os, signal, subprocess, sys, time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
# x86_64 system call numbers (the tests skip the syscall attacks on other machines).
SYSCALLS = {
    "ptrace": 101, "syslog": 103, "setuid": 105, "mknod": 133, "pivot_root": 155, "chroot": 161,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "reboot": 169,
    "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179, "add_key": 248,
    "request_key": 249, "keyctl": 250, "kexec_load": 246, "unshare": 272, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "open_tree": 428, "fsopen": 430, "clone3": 435,
    "pidfd_getfd": 438, "clone": 56,
}
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206
CGROUP_PROCS = ("/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs",
                "/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/unified/cgroup.procs",
                "/sys/fs/cgroup/memory/tasks")


def failure(exc):
    code = getattr(exc, "errno", None)
    return {"ok": False, "errno": code, "error": errno.errorcode.get(code, str(code)), "detail": str(exc)[:300]}


def outcome(action):
    # {"ok": True, "detail": ...} if `action` got through, else the error it met.
    try:
        detail = action()
    except OSError as exc:
        return failure(exc)
    except Exception as exc:  # noqa: BLE001 - anything else is a refusal too, but say what it was
        return {"ok": False, "errno": None, "error": type(exc).__name__, "detail": str(exc)[:300]}
    return {"ok": True, "detail": detail}


def raw_syscall(name, *args):
    # The syscall's return value and errno; arguments are ints, bytes or None.
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    result = LIBC.syscall(SYSCALLS[name], *converted)
    code = ctypes.get_errno() if result == -1 else 0
    return {"ret": int(result), "errno": code, "error": errno.errorcode.get(code, "") if code else ""}


def read_mem(pid):
    with open(f"/proc/{pid}/maps") as maps:
        first = maps.readline().split()[0].split("-")[0]
    with open(f"/proc/{pid}/mem", "rb", 0) as mem:
        mem.seek(int(first, 16))
        return len(mem.read(64))


def vm_readv(pid):
    buffer = ctypes.create_string_buffer(64)
    local = (ctypes.c_void_p * 2)(ctypes.cast(buffer, ctypes.c_void_p), 64)
    remote = (ctypes.c_void_p * 2)(0x400000, 64)
    return raw_syscall("process_vm_readv", pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)


def leave_cgroup():
    results = {path: outcome(lambda path=path: open(path, "w").write(str(os.getpid()))) for path in CGROUP_PROCS}
    results["/proc/self/cgroup"] = outcome(lambda: open("/proc/self/cgroup").read())
    results["mount cgroupfs"] = outcome(lambda: subprocess.run(
        ["mount", "-t", "cgroup", "-o", "memory", "none", "/sandbox/tmp"], capture_output=True, timeout=5,
        check=True))
    return results
"""
exec(PRELUDE)
MIB = 1024 * 1024
TIOCSTI = 0x5412


def script(body, *args, timeout=30):
    """Run PRELUDE + `body` in a fresh interpreter; its last line on stdout is its JSON answer."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", PRELUDE + body, *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"script failed": {"ok": False, "errno": None, "error": f"exit {done.returncode}",
                                  "detail": done.stderr.decode()[-1000:]}}
    return json.loads(lines[-1])


def read_path(path, markers):
    if os.path.isdir(path):
        return {"entries": sorted(os.listdir(path))[:50]}
    with open(path, "rb") as handle:
        data = handle.read(256 * 1024)
    return {"size": len(data), "markers": [m for m in markers if m.encode() in data]}


@cloaca.task(id="ping")
@answers
def ping(context):
    context.set("pong", True)
    context.set("pid", os.getpid())
    context.set("uid", os.getuid())


@cloaca.task(id="crash")
@answers
def crash(context):
    """Die: the sandbox's next incarnation is a fresh fork of the zygote."""
    os._exit(3)


@cloaca.task(id="read_paths")
@answers
def read_paths(context):
    """Read files (the first 256 KiB) or list directories the test names; report any marker seen."""
    markers = context.get("markers", [])
    context.set("results", {path: outcome(lambda path=path: read_path(path, markers))
                            for path in context.get("paths", [])})


@cloaca.task(id="scan_proc")
@answers
def scan_proc(context):
    """Every process this sandbox can see, its command line and environment; markers found anywhere."""
    markers = context.get("markers", [])
    seen, found = {}, []
    parent = os.getppid()
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)[:2000]:
        entry = {}
        for name in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as handle:
                    data = handle.read(64 * 1024)
            except OSError as exc:
                entry[name] = failure(exc)
                continue
            entry[name] = {"ok": True, "text": data.replace(b"\0", b" ").decode("utf-8", "replace")[:300]}
            found += [f"/proc/{pid}/{name}: {m}" for m in markers if m.encode() in data]
        seen[pid] = entry
    extra = {}
    for path in [f"/proc/{parent}/environ", f"/proc/{parent}/cmdline", "/proc/1/environ", "/proc/self/environ"]:
        extra[path] = outcome(lambda path=path: read_path(path, markers))
        if extra[path]["ok"]:
            found += [f"{path}: {m}" for m in extra[path]["detail"]["markers"]]
    found += [f"os.environ: {m}" for m in markers if any(m in f"{k}={v}" for k, v in os.environ.items())]
    context.set("pid", os.getpid())
    context.set("ppid", parent)
    context.set("processes", seen)
    context.set("direct", extra)
    context.set("found", sorted(set(found)))
    context.set("environ_keys", sorted(os.environ))


def try_write(path, how):
    """"probe": open for append and write nothing; "append": write a line; "create": a new file, then remove it."""
    if how == "create":
        target = os.path.join(path, f".cloaca-redteam-{os.getpid()}-{time.monotonic_ns()}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(target)
        return f"created and removed {target}"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        if how == "append":
            os.write(fd, b"\nimport os; os.environ['PWNED_BY_MALLORY'] = '1'  # appended by a hostile tenant\n")
            return "appended"
        return "opened for writing"
    finally:
        os.close(fd)


@cloaca.task(id="write_paths")
@answers
def write_paths(context):
    """[path, how] pairs from the test, then the runtime, stdlib and own tree as this sandbox finds them."""
    import cloaca as runtime_cloaca
    import grpc
    import sandbox_runtime

    attempts = [tuple(pair) for pair in context.get("targets", [])]
    own = sorted(glob.glob("/package/**/*.py", recursive=True))
    attempts += [
        (runtime_cloaca.__file__, "probe"), (sandbox_runtime.__file__, "probe"), (grpc.__file__, "probe"),
        (os.path.dirname(runtime_cloaca.__file__), "create"), (os.path.dirname(grpc.__file__), "create"),
        (os.__file__, "probe"), (json.__file__, "probe"), (os.path.dirname(os.__file__), "create"),
        (sys.executable, "probe"), ("/usr/lib", "create"), ("/etc", "create"), ("/", "create"),
    ]
    # The directories the runtime's modules are found under (its sys.path entries after the package's).
    attempts += [(entry, "create") for entry in sys.path if entry and not entry.startswith("/package")]
    # Every module already imported (the zygote's preloads: the runtime, grpc, protobuf, the stdlib).
    loaded = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
    attempts += [(path, "probe") for path in loaded]
    attempts += [(path, "append") for path in own] + [("/package", "create")]
    attempts += [(os.path.dirname(path), "create") for path in own[:1]]
    results = {f"{how} {path}": outcome(lambda path=path, how=how: try_write(path, how)) for path, how in attempts}
    if own:
        target = own[0]
        results[f"rename {target}"] = outcome(lambda: os.rename(target, target + ".moved"))
        results[f"unlink {target}"] = outcome(lambda: os.unlink(target))
        results[f"chmod {target}"] = outcome(lambda: os.chmod(target, 0o777))
        results[f"utime {target}"] = outcome(lambda: os.utime(target, (0, 0)))
        results[f"hard link {target} into /tmp"] = outcome(lambda: os.link(target, "/tmp/hard-link"))
    context.set("results", results)


@cloaca.task(id="signals")
@answers
def signals(context):
    """Kill the supervisor, pid 1, every pid up to a bound, and other tenants' process groups."""
    host_pids = context.get("host_pids", {})
    results = {}
    # The supervisor as a child sees it: its parent. Inside a pid namespace that is 0, which kill()
    # takes as "my own process group": only this sandbox's own processes could be hit.
    results["kill(getppid(), SIGKILL)"] = outcome(lambda: os.kill(os.getppid(), signal.SIGKILL))
    results["kill(1, SIGKILL)"] = outcome(lambda: os.kill(1, signal.SIGKILL))
    visible = []
    for pid in range(1, int(context.get("scan_up_to", 65536)) + 1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        visible.append(pid)
    killed = {}
    for pid in visible:
        if pid not in (1, os.getpid()):
            killed[str(pid)] = outcome(lambda pid=pid: os.kill(pid, signal.SIGKILL))
    for label, pid in host_pids.items():
        probe = outcome(lambda pid=pid: os.kill(pid, 0))
        results[f"kill({label} {pid}, 0)"] = probe
        # SIGKILL only what signal 0 could not reach: a hole shows, without taking the test run down with it.
        if not probe["ok"] or label.startswith("victim"):
            results[f"kill({label} {pid}, SIGKILL)"] = outcome(lambda pid=pid: os.kill(pid, signal.SIGKILL))
            results[f"killpg({label} {pid}, SIGKILL)"] = outcome(lambda pid=pid: os.killpg(pid, signal.SIGKILL))
        results[f"pidfd_open({label} {pid})"] = outcome(lambda pid=pid: os.close(os.pidfd_open(pid)))
    context.set("visible", visible)
    context.set("killed", killed)
    context.set("results", results)
    context.set("pid", os.getpid())



OWN_CHILD = """
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    signal.alarm(10)
    os.close(write_end)
    os.read(read_end, 1)
    os._exit(0)
os.close(read_end)
out = {}
try:
    out["PTRACE_ATTACH own child"] = raw_syscall("ptrace", PTRACE_ATTACH, child, 0, 0)
    out["process_vm_readv own child"] = vm_readv(child)
    out["/proc/<own child>/mem"] = outcome(lambda: read_mem(child))
finally:
    os.close(write_end)
    os.waitpid(child, 0)
out["PTRACE_TRACEME"] = raw_syscall("ptrace", PTRACE_TRACEME, 0, 0, 0)
print(json.dumps(out))
"""


@cloaca.task(id="other_processes")
@answers
def other_processes(context):
    """Another sandbox's (or the supervisor's) memory through /proc/PID/mem, PTRACE_ATTACH, process_vm_readv."""
    results = {}
    for label, pid in context.get("host_pids", {}).items():
        results[f"/proc/{pid}/mem ({label})"] = outcome(lambda pid=pid: read_mem(pid))
        results[f"/proc/{pid}/root ({label})"] = outcome(lambda pid=pid: os.listdir(f"/proc/{pid}/root"))
        results[f"PTRACE_ATTACH {pid} ({label})"] = raw_syscall("ptrace", PTRACE_ATTACH, pid, 0, 0)
        results[f"PTRACE_SEIZE {pid} ({label})"] = raw_syscall("ptrace", PTRACE_SEIZE, pid, 0, 0)
        results[f"process_vm_readv {pid} ({label})"] = vm_readv(pid)
    # Its own child: what ptrace gives inside the sandbox (nothing, under the seccomp filter).
    results.update(script(OWN_CHILD))
    context.set("results", results)


def unix_connect(path, call_tasks=False):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(path)
    finally:
        sock.close()
    detail = "connected"
    if call_tasks:  # reached it: try the sandbox protocol without the supervisor's token
        target = f"unix:{path}" if not path.startswith("\0") else f"unix-abstract:{path[1:]}"
        try:
            answer = grpc_unary(target, "/cloaca.sandbox.runtime.v1.Sandbox/Discover", timeout=2)
            detail = f"Discover answered {len(answer)} bytes"
        except Exception as exc:  # noqa: BLE001
            detail = f"Discover refused: {exc!r}"[:300]
    return detail


def grpc_unary(target, method, request=b"", timeout=5.0):
    """One raw unary gRPC call (grpc.aio: the sandbox has what the runtime preloaded)."""
    import asyncio
    import grpc.aio

    async def call():
        async with grpc.aio.insecure_channel(target) as channel:
            stub = channel.unary_unary(method, request_serializer=lambda m: m, response_deserializer=lambda m: m)
            return await stub(request, timeout=timeout)

    return asyncio.run(call())


def tcp_connect(host, port, family=socket.AF_INET, send=b""):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect((host, port))
        if send:
            sock.sendall(send)
        return "connected"
    finally:
        sock.close()


def udp_send(host, port, payload):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        return sock.sendto(payload, (host, port))
    finally:
        sock.close()


def abstract_names():
    """Abstract Unix socket names this sandbox's network namespace shows in /proc/net/unix."""
    names = []
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith("@"):
                names.append(parts[7][1:])
    return names


def call_api(port, method, request=b""):
    """A raw unary call to the public API (no key): what a keyless service would do with it."""
    answer = grpc_unary(f"127.0.0.1:{port}", f"/cloaca.sandbox.v1.Supervisor/{method}", request)
    return answer.decode("latin-1")[:2000]


def vsock_bind(port):
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        sock.bind((socket.VMADDR_CID_ANY, port))
        return f"bound vsock port {port}"
    finally:
        sock.close()


@cloaca.task(id="network")
@answers
def network(context):
    """Other sandboxes' sockets, loopback and Internet TCP/UDP, abstract Unix sockets, vsock."""
    results = {}
    for path in context.get("unix_paths", []):
        results[f"unix {path}"] = outcome(lambda path=path: unix_connect(path, call_tasks=True))
    for path in glob.glob("/run/**", recursive=True) + glob.glob("/proc/[0-9]*/root/run/sandbox/s"):
        try:
            is_socket = os.path.exists(path) and os.stat(path).st_mode & 0o170000 == 0o140000
            if is_socket and os.path.samefile(path, "/run/sandbox/s"):
                continue  # its own socket
        except OSError:
            is_socket = False
        if is_socket:
            results[f"unix (found) {path}"] = outcome(lambda path=path: unix_connect(path, call_tasks=True))
    for name in context.get("abstract", []) + abstract_names()[:20]:
        results[f"abstract @{name}"] = outcome(lambda name=name: unix_connect("\0" + name))
    for label, (host, port) in context.get("tcp", {}).items():
        results[f"tcp {label} {host}:{port}"] = outcome(
            lambda host=host, port=port: tcp_connect(host, port, send=context.get("greeting", "").encode()))
    for label, (host, port) in context.get("udp", {}).items():
        results[f"udp {label} {host}:{port}"] = outcome(
            lambda host=host, port=port: udp_send(host, port, context.get("greeting", "x").encode()))
    results["tcp6 ::1 public API"] = outcome(lambda: tcp_connect("::1", context.get("api_port", 1),
                                                                 socket.AF_INET6))
    if context.get("api_port"):
        results["api ListPackages"] = outcome(lambda: call_api(context["api_port"], "ListPackages"))
        for victim in context.get("unload", []):
            request = b"\x0a" + bytes([len(victim)]) + victim.encode()
            results[f"api UnloadPackage {victim}"] = outcome(
                lambda request=request: call_api(context["api_port"], "UnloadPackage", request))
    if context.get("vsock_port") and hasattr(socket, "AF_VSOCK"):
        results["vsock socket"] = outcome(lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close())
        results["vsock bind to the host's port"] = outcome(lambda: vsock_bind(context["vsock_port"]))
    results["raw socket"] = outcome(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close())
    context.set("results", results)


SYSCALL_ATTEMPTS = """
CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x20000, 0x2000000, 0x10000000, 0x20000000, 0x40000000)
flags = {"NEWUSER": CLONE_NEWUSER, "NEWNS": CLONE_NEWNS, "NEWPID": CLONE_NEWPID, "NEWNET": CLONE_NEWNET,
         "NEWUSER|NEWNS": CLONE_NEWUSER | CLONE_NEWNS, "NEWCGROUP": CLONE_NEWCGROUP}
out = {f"unshare({name})": raw_syscall("unshare", value) for name, value in flags.items()}
clone = raw_syscall("clone", CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
if clone["ret"] == 0:
    os._exit(0)  # a child in a new user namespace: it must not run on
if clone["ret"] > 0:
    os.waitpid(clone["ret"], 0)
out["clone(NEWUSER)"] = clone
out["clone3"] = raw_syscall("clone3", 0, 0)
ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
out["setns(own net ns)"] = raw_syscall("setns", ns_fd, 0)
os.close(ns_fd)
out["mount tmpfs"] = raw_syscall("mount", b"none", b"/sandbox/tmp", b"tmpfs", 0, None)
out["mount proc"] = raw_syscall("mount", b"proc", b"/sandbox/tmp", b"proc", 0, None)
out["mount bind /"] = raw_syscall("mount", b"/", b"/sandbox/tmp", None, 4096 | 16384, None)
out["umount2 /proc"] = raw_syscall("umount2", b"/proc", 2)
out["pivot_root"] = raw_syscall("pivot_root", b"/sandbox", b"/sandbox/tmp")
out["chroot"] = raw_syscall("chroot", b"/sandbox/tmp")
out["bpf"] = raw_syscall("bpf", 0, 0, 0)
out["keyctl"] = raw_syscall("keyctl", 0, 0, 0, 0, 0)
out["add_key"] = raw_syscall("add_key", b"user", b"mallory", b"x", 1, -3)
out["request_key"] = raw_syscall("request_key", b"user", b"mallory", None, 0)
out["perf_event_open"] = raw_syscall("perf_event_open", 0, 0, -1, -1, 0)
out["kexec_load"] = raw_syscall("kexec_load", 0, 0, 0, 0)
out["kexec_file_load"] = raw_syscall("kexec_file_load", -1, -1, 0, 0, 0)
out["init_module"] = raw_syscall("init_module", 0, 0, b"")
out["finit_module"] = raw_syscall("finit_module", -1, b"", 0)
out["delete_module"] = raw_syscall("delete_module", b"ext4", 0)
out["reboot (bad magic)"] = raw_syscall("reboot", 0, 0, 0, 0)
out["swapon"] = raw_syscall("swapon", b"/sandbox/tmp/swap", 0)
out["acct"] = raw_syscall("acct", None)
out["iopl"] = raw_syscall("iopl", 3)
out["ioperm"] = raw_syscall("ioperm", 0, 1024, 1)
out["syslog"] = raw_syscall("syslog", 3, 0, 0)
out["quotactl"] = raw_syscall("quotactl", 0, None, 0, 0)
out["settimeofday"] = raw_syscall("settimeofday", 0, 0)
out["setuid(0)"] = raw_syscall("setuid", 0)
out["mknod block device"] = raw_syscall("mknod", b"/sandbox/tmp/disk", 0o60600, (254 << 8))
out["io_uring_setup"] = raw_syscall("io_uring_setup", 1, 0)
out["userfaultfd"] = raw_syscall("userfaultfd", 0)
out["open_by_handle_at"] = raw_syscall("open_by_handle_at", -100, 0, 0)
out["name_to_handle_at"] = raw_syscall("name_to_handle_at", -100, b"/", 0, 0, 0)
out["open_tree"] = raw_syscall("open_tree", -100, b"/", 1)
out["fsopen"] = raw_syscall("fsopen", b"tmpfs", 0)
out["fanotify_init"] = raw_syscall("fanotify_init", 0, 0)
out["kcmp"] = raw_syscall("kcmp", 1, 1, 0, 0, 0)
out["pidfd_getfd"] = raw_syscall("pidfd_getfd", 0, 0, 0)
print(json.dumps(out))
"""


@cloaca.task(id="syscalls")
@answers
def syscalls(context):
    """The system calls that would undo confinement, tried in a fresh single-threaded process (unshare
    refuses a threaded caller whatever the filter says)."""
    context.set("results", script(SYSCALL_ATTEMPTS))
    with open("/proc/self/status") as status:
        context.set("status", {k: v.strip() for k, _, v in (line.partition(":") for line in status)
                               if k in ("NoNewPrivs", "Seccomp", "CapEff", "CapPrm", "CapBnd", "CapAmb", "Uid")})


@cloaca.task(id="machine")
@answers
def machine(context):
    """/dev, /proc/sys, sysrq, /etc/shadow, setuid binaries, TIOCSTI: the machine's own soft spots."""
    results = {}
    for path in ("/etc/shadow", "/etc/sudoers", "/root/.ssh", "/root/.bash_history", "/home", "/dev/mem",
                 "/dev/kmem", "/dev/port", "/dev/kmsg", "/dev/vda", "/dev/sda", "/dev/tty", "/dev/console",
                 "/dev/ptmx", "/dev/vsock", "/dev/fuse", "/dev/net/tun", "/proc/kcore", "/proc/kmsg",
                 "/sys/kernel", "/sys/fs/cgroup", "/boot", "/var/lib", "/var/run/docker.sock"):
        results[f"read {path}"] = outcome(lambda path=path: read_path(path, []))
    for path in ("/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname", "/proc/sys/vm/drop_caches",
                 "/proc/sysrq-trigger", "/proc/sys/kernel/sysrq", "/proc/sys/kernel/modprobe",
                 "/proc/self/oom_score_adj", "/proc/1/attr/current", "/dev/null"):
        results[f"open for write {path}"] = outcome(lambda path=path: try_write(path, "probe"))
    results["mknod /dev/sdx"] = outcome(lambda: os.mknod("/sandbox/tmp/sdx", 0o60600, os.makedev(8, 0)))
    results["dev entries"] = outcome(lambda: sorted(os.listdir("/dev")))
    null = os.open("/dev/null", os.O_RDWR)
    try:
        import fcntl
        results["TIOCSTI on /dev/null"] = outcome(lambda: fcntl.ioctl(null, TIOCSTI, b"x"))
        results["TIOCSTI on stdout"] = outcome(lambda: fcntl.ioctl(1, TIOCSTI, b"x"))
    finally:
        os.close(null)
    setuid = []
    for directory in ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/lib/openssh"):
        for name in sorted(os.listdir(directory))[:2000] if os.path.isdir(directory) else []:
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_mode & 0o6000 and os.path.isfile(path):
                setuid.append(path)
    nosuid = {path: bool(os.statvfs(path).f_flag & os.ST_NOSUID) for path in setuid}
    context.set("setuid", nosuid)
    runs = {}
    for command in (["su", "-c", "id -u", "root"], ["sudo", "-n", "id", "-u"], ["newgrp", "root"],
                    ["passwd", "-S", "root"]):
        def run(command=command):
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=5,
                                  env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})
            return {"code": done.returncode, "stdout": done.stdout.decode()[-200:],
                    "stderr": done.stderr.decode()[-200:]}
        runs[" ".join(command)] = outcome(run)
    context.set("runs", runs)
    with open("/proc/self/status") as status:
        context.set("no_new_privs", next(l.split()[1] for l in status if l.startswith("NoNewPrivs")))
    context.set("results", results)


@cloaca.task(id="links")
@answers
def links(context):
    """Symlink and hard-link tricks in its writable places, aimed at its own tree and at host paths."""
    own = sorted(glob.glob("/package/**/*.py", recursive=True))[0]
    results = {}
    scratch = os.environ.get("TMPDIR", "/tmp")
    sym = os.path.join(scratch, "evil-symlink")
    if os.path.lexists(sym):
        os.unlink(sym)
    results["symlink in scratch to own tree"] = outcome(lambda: os.symlink(own, sym))
    results["write through that symlink"] = outcome(lambda: try_write(sym, "probe"))
    results["hard link own tree -> scratch"] = outcome(lambda: os.link(own, os.path.join(scratch, "hl")))
    results["hard link own tree -> socket dir"] = outcome(lambda: os.link(own, "/run/sandbox/hl"))
    with open(os.path.join(scratch, "payload.py"), "w") as handle:
        handle.write("print('pwned')\n")
    results["hard link scratch -> own tree"] = outcome(
        lambda: os.link(os.path.join(scratch, "payload.py"), os.path.join(os.path.dirname(own), "payload.py")))
    results["rename scratch -> own tree"] = outcome(
        lambda: os.rename(os.path.join(scratch, "payload.py"), os.path.join(os.path.dirname(own), "payload.py")))
    # Links in the socket directory, which is a host directory the supervisor removes at unload:
    # the removal must not follow them.
    for index, target in enumerate(context.get("host_targets", [])):
        link = f"/run/sandbox/link-{index}"
        results[f"symlink {link} -> {target}"] = outcome(lambda link=link, target=target: os.symlink(target, link))
    if context.get("host_dirs"):
        results["symlink /run/sandbox/dir -> host dir"] = outcome(
            lambda: os.symlink(context["host_dirs"][0], "/run/sandbox/dir"))
    context.set("results", results)


@cloaca.task(id="fill")
@answers
def fill(context):
    """Write up to `mib` MiB into each directory in turn, 1 MiB at a time; the file is removed after."""
    limit = int(context.get("mib", 64))
    results = {}
    for directory in context.get("dirs") or [os.environ["TMPDIR"], os.environ["HOME"], "/dev/shm", "/tmp"]:
        path = os.path.join(directory, "fill.bin")
        written, error = 0, None
        block = b"\xa5" * MIB
        try:
            with open(path, "wb") as handle:
                while written < limit:
                    handle.write(block)
                    handle.flush()
                    written += 1
                os.fsync(handle.fileno())
        except OSError as exc:
            error = failure(exc)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        results[directory] = {"written_mib": written, "error": error}
    context.set("results", results)


DAEMON = """
seconds = float(sys.argv[1])
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    try:
        os.setsid()
        grandchild = os.fork()
        if grandchild:
            os.write(write_end, str(grandchild).encode())
            os._exit(0)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        escape = leave_cgroup()
        os.write(write_end, b"|" + json.dumps(escape).encode())
        os.close(write_end)
        os.close(read_end)
        deadline = time.monotonic() + seconds  # bounded: it goes on its own after `seconds`
        while time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os._exit(0)
os.close(write_end)
os.waitpid(child, 0)
data = b""
while True:
    chunk = os.read(read_end, 65536)
    if not chunk:
        break
    data += chunk
pid, _, escape = data.decode().partition("|")
print(json.dumps({"daemon_pid": int(pid), "escape": json.loads(escape or "{}")}))
"""


@cloaca.task(id="leave_daemon")
@answers
def leave_daemon(context):
    """Move into the root cgroup, and leave a process in a session of its own that outlives the call."""
    report = script(DAEMON, float(context.get("seconds", 60)))
    context.set("daemon_pid", report.get("daemon_pid"))
    context.set("escape", report.get("escape", report))
    context.set("own_escape", leave_cgroup())


BOMB = """
limit = int(sys.argv[1])
read_end, write_end = os.pipe()
children, error = [], None
for _ in range(limit):
    try:
        pid = os.fork()
    except OSError as exc:
        error = failure(exc)
        break
    if pid == 0:
        signal.alarm(10)  # bounded, whatever happens to the parent
        os.close(write_end)
        os.read(read_end, 1)  # returns once the parent closes its end
        os._exit(0)
    children.append(pid)
os.close(write_end)
os.close(read_end)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"forked": len(children), "error": error}))
"""


@cloaca.task(id="fork_bomb")
@answers
def fork_bomb(context):
    """Fork until refused, at most `limit` times; each child waits for the parent (10 s at most)."""
    for key, value in script(BOMB, int(context.get("limit", 200))).items():
        context.set(key, value)


HOARD = []


@cloaca.task(id="hoard_inotify")
@answers
def hoard_inotify(context):
    """Take every inotify instance this uid may have (a kernel-wide count per uid) and keep them."""
    error = None
    while len(HOARD) < int(context.get("limit", 512)):
        fd = LIBC.inotify_init1(0o2000000)  # IN_CLOEXEC
        if fd < 0:
            code = ctypes.get_errno()
            error = {"ok": False, "errno": code, "error": errno.errorcode.get(code, str(code))}
            break
        HOARD.append(fd)
    context.set("held", len(HOARD))
    context.set("error", error)
    context.set("uid", os.getuid())


@cloaca.task(id="release")
@answers
def release(context):
    while HOARD:
        os.close(HOARD.pop())


@cloaca.task(id="memory_residue")
@answers
def memory_residue(context):
    """Look through this process's memory (inherited from the zygote) for other sandboxes' secrets.

    The test sends sha256 digests, never the secrets themselves, so the request cannot plant them.
    """
    wanted = set(context.get("digests", []))
    pattern = re.compile(rb"[0-9a-f]{32}|/packages/[0-9a-f]{32}|/run/s[a-z0-9_]{8}")
    found, scanned = [], 0
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] not in ("[heap]", "[stack]")):
                continue  # anonymous memory and the heap: where a freed request would be
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > 256 * MIB:
                continue
            try:
                mem.seek(start)
                chunk = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            scanned += len(chunk)
            for match in pattern.finditer(chunk):
                if hashlib.sha256(match.group()).hexdigest() in wanted:
                    found.append(match.group().decode())
    context.set("found", sorted(set(found)))
    context.set("scanned_mib", round(scanned / MIB, 1))
'''

VICTIM_SECRET = "ledger-secret-4e1f0b9d2a7c"

VICTIM = f'''
"""Another tenant's package: a secret in its source, and a task that answers the same every time."""
import ctypes
import errno
import hashlib
import os

import cloaca

SECRET = "{VICTIM_SECRET}"


@cloaca.task(id="answer")
def answer(context):
    context.set("answer", 42)
    context.set("digest", hashlib.sha256(SECRET.encode()).hexdigest())
    context.set("patched", os.environ.get("PWNED_BY_MALLORY", "no"))
    context.set("db_password_set", cloaca.var_or("LEDGER_DB_PASSWORD", None) is not None)
    return context


@cloaca.task(id="watch")
def watch(context):
    """What a workflow that watches a directory needs first: an inotify instance."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        context.set("inotify", errno.errorcode.get(ctypes.get_errno(), "?"))
    else:
        os.close(fd)
        context.set("inotify", "ok")
    return context
'''

# Rewrites the isolation report its own sandbox sends with the discovery answer: the report is
# built before the package is imported, and sent after.
FORGER = '''
import gc

import cloaca

for _candidate in gc.get_objects():
    if type(_candidate).__name__ == "SandboxServicer":
        _candidate.isolation.update({layer: "on (as the package says)" for layer in list(_candidate.isolation)})


@cloaca.task(id="noop")
def noop(context):
    pass
'''
