"""What confines each sandbox: the layers this machine allows, and each sandbox's plan.

At start the supervisor probes the machine once (a throwaway child tries every
layer and reports which held, `probe_plan`), logs the result, and from then on
asks every sandbox for exactly the layers the probe saw work, each as required:
a sandbox never silently runs with less than the machine gives. With
`--isolation strict`, a machine missing any layer refuses to start sandboxes.

The plan (sandbox_runtime.confinement.Plan) is built here, where the host's
paths are known: the sandbox's identity (a uid of its own from `UidPool` when
the service is root, a user namespace otherwise), its minimal root (the
interpreter, the standard library, the runtime's modules and the package's own
tree, read-only; a size-capped tmpfs for home and temp; its socket directory),
the Landlock fence and the seccomp filter.

Tests (and operators checking how the service behaves on a lesser machine) can
name layers to treat as missing in CLOACA_SANDBOX_SIMULATE_MISSING_LAYERS
(comma-separated), which the probe then reports as unavailable.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox_runtime.confinement import (
    CGROUP,
    IDENTITY,
    IPC,
    LANDLOCK,
    LAYERS,
    MOUNT,
    NETWORK,
    NO_NEW_PRIVS,
    PID,
    PIDS,
    SECCOMP,
    USER,
)
from supervisor.config import IsolationLevel
from supervisor.sandboxes.runtime import RuntimeFiles

log = logging.getLogger(__name__)

SIMULATE_MISSING = "CLOACA_SANDBOX_SIMULATE_MISSING_LAYERS"
INSIDE_UID = 1000  # the sandbox's uid as it sees itself inside a user namespace
SCRATCH, HOME, TMP, SHM = "/sandbox", "/sandbox/home", "/sandbox/tmp", "/sandbox/shm"
PACKAGE_ROOT = "/package"
SOCKET_DIR = "/run/sandbox"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom")


class IsolationUnavailable(RuntimeError):
    """Strict isolation was asked for, and this machine cannot give every layer."""


@dataclass
class MachineLayers:
    """Each layer and what the probe found: "on ..." or "off (reason)"."""

    layers: dict[str, str] = field(default_factory=dict)

    def available(self, layer: str) -> bool:
        return self.layers.get(layer, "off").startswith("on")

    def missing(self) -> dict[str, str]:
        """Layers that do not hold (a layer this setup does not need, "n/a", is not missing)."""
        return {layer: state for layer, state in self.layers.items() if state.startswith("off")}

    def describe(self) -> str:
        return ", ".join(f"{layer} {state}" for layer, state in self.layers.items())


def simulated_missing() -> set[str]:
    return {name.strip() for name in os.environ.get(SIMULATE_MISSING, "").split(",") if name.strip()}


def _passable_by_others(path: str) -> bool:
    """Every directory above `path` lets other users pass (o+x)."""
    current = os.path.dirname(os.path.realpath(path))
    while True:
        try:
            if not os.stat(current).st_mode & 0o001:
                return False
        except OSError:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


class UidPool:
    """Distinct unprivileged uids for sandboxes when the service runs as root.

    Every supervisor on the host draws from the same range, so a uid is taken by
    holding an exclusive lock (flock) on a file named after it in a root-only
    directory: no two sandboxes of any supervisors share a uid (and with it the
    kernel's per-uid limits), and a supervisor that dies frees its uids with its
    locks.
    """

    LOCK_DIR = Path("/run/cloaca-sandbox/uids")

    def __init__(self, base: int, size: int, lock_dir: Path | None = None) -> None:
        self.base = base
        self.size = size
        self.lock_dir = lock_dir or self.LOCK_DIR
        self._held: dict[int, int] = {}  # uid -> the fd holding its lock
        self._next = secrets.randbelow(size)  # start apart from other supervisors

    def allocate(self) -> int:
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for step in range(self.size):
            uid = self.base + (self._next + step) % self.size
            if uid in self._held:
                continue
            fd = os.open(self.lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held[uid] = fd
            self._next = (self._next + step + 1) % self.size
            return uid
        raise RuntimeError(f"all {self.size} sandbox uids from {self.base} are in use on this host")

    def release(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)  # the lock goes with it


@dataclass(frozen=True)
class SandboxPaths:
    """One incarnation's host directories and what the sandbox calls them."""

    package_root: Path  # the extracted package (read-only to the sandbox)
    import_paths: list[Path]  # source then vendor, inside package_root
    socket_dir: Path  # owned by the sandbox's uid, 0700
    root_mountpoint: Path  # an empty directory the sandbox builds its root on
    home: Path  # used only when there is no mount namespace
    tmp: Path


@dataclass(frozen=True)
class SandboxPlan:
    """What the start request carries, and what the supervisor needs to know about it."""

    confinement: dict[str, Any]
    socket_path: str  # as the sandbox sees it
    in_own_root: bool  # in its own mount namespace: the supervisor reaches the socket via /proc/PID/root
    package_paths: list[str]  # as the sandbox sees them
    env: dict[str, str]
    cwd: str
    uid: int | None  # the host uid it runs as, when it has its own


class IsolationPolicy:
    def __init__(self, level: IsolationLevel, runtime: RuntimeFiles, cgroups_memory: bool, cgroups_pids: bool,
                 uid_base: int = 1_800_000_000, uid_count: int = 65536) -> None:
        self.level = level
        self.runtime = runtime
        self.cgroups_memory = cgroups_memory
        self.cgroups_pids = cgroups_pids
        self.as_root = os.geteuid() == 0
        self.uids = UidPool(uid_base, uid_count)
        self.machine: MachineLayers | None = None

    # --- the probe ---------------------------------------------------------------

    def probe_plan(self, paths: SandboxPaths) -> tuple[dict[str, Any], int | None]:
        """A plan asking for every layer, none required (the probe child reports what held), and the uid
        it runs as, to be released once the probe has exited."""
        uid = self.uids.allocate() if self.as_root else None
        plan = self._plan(paths, uid=uid, network=False, scratch_bytes=1 << 20, max_processes=64,
                          cgroup_procs=[], every_layer=True)
        plan["required"] = []
        return plan, uid

    def record_probe(self, report: dict[str, str]) -> MachineLayers:
        missing = simulated_missing()
        layers = {layer: report.get(layer, "off (unknown)") for layer in LAYERS}
        layers[CGROUP] = "on (memory)" if self.cgroups_memory else "off (no writable memory cgroup)"
        if not self.cgroups_pids and not layers[PIDS].startswith("on"):
            layers[PIDS] = "off (no writable pids cgroup, and no uid of its own for an rlimit)"
        elif self.cgroups_pids:
            layers[PIDS] = "on (cgroup)"
        if self.as_root and USER not in missing:
            layers[USER] = "n/a (the service is root: each sandbox runs as a uid of its own instead)"
        if not self.as_root and layers.get(IDENTITY, "").startswith("off") and layers[USER].startswith("on"):
            layers[IDENTITY] = "on (user namespace)"
        for layer in missing & set(LAYERS):
            layers[layer] = "off (simulated missing)"
        self.machine = MachineLayers(layers)
        return self.machine

    def check_strict(self) -> None:
        assert self.machine is not None
        missing = self.machine.missing()
        if self.level is IsolationLevel.STRICT and missing:
            raise IsolationUnavailable(
                "strict isolation: this machine cannot give every confinement layer ("
                + ", ".join(f"{layer} {state}" for layer, state in missing.items())
                + "); run without --isolation strict to accept the strongest it allows")

    # --- one sandbox ---------------------------------------------------------------

    def plan_for(self, paths: SandboxPaths, *, network: bool, scratch_bytes: int, max_processes: int,
                 cgroup_procs: list[str], env: dict[str, str]) -> SandboxPlan:
        """The plan for one incarnation: every layer the probe saw work, each required."""
        assert self.machine is not None, "probe the machine first"
        self.check_strict()
        uid = self.uids.allocate() if self.as_root and self._own_uid_possible(paths) else None
        confinement = self._plan(paths, uid=uid, network=network, scratch_bytes=scratch_bytes,
                                 max_processes=max_processes, cgroup_procs=cgroup_procs, every_layer=False)
        in_root = confinement["root"] is not None
        package_paths = [self._inside(path, paths.package_root) if in_root else str(path)
                         for path in paths.import_paths]
        home, tmp = (HOME, TMP) if in_root else (str(paths.home), str(paths.tmp))
        full_env = {**env, "HOME": home, "TMPDIR": tmp, "USER": "sandbox", "LOGNAME": "sandbox"}
        socket_path = f"{SOCKET_DIR}/s" if in_root else str(paths.socket_dir / "s")
        return SandboxPlan(confinement, socket_path, in_root, package_paths, full_env, tmp, uid)

    def _own_uid_possible(self, paths: SandboxPaths) -> bool:
        """A uid of its own, where the sandbox can still reach its files as that uid.

        In its own mount namespace everything it needs is bound into its root. Without
        one it sees the host's paths, and every directory above them must let others pass.
        """
        assert self.machine is not None
        if not self.machine.available(IDENTITY):
            return False
        if self.machine.available(PID) and self.machine.available(MOUNT):
            return True
        needed = [*self.runtime.read_only_paths(), str(paths.package_root), str(paths.home), str(paths.socket_dir)]
        blocked = [path for path in needed if not _passable_by_others(path)]
        if blocked:
            log.warning("sandboxes run as the service's own user: without a mount namespace they would need "
                        "to reach %s as another uid, and a directory above it lets no other user pass",
                        blocked[0])
            return False
        return True

    def report(self, plan: SandboxPlan) -> dict[str, str]:
        """What confines a sandbox, from the supervisor's side: the layers its plan required (its start
        fails unless each holds, before any package code runs), described as the machine probe saw them.

        Not the sandbox's own report: that one comes back after the package's code has run, which
        could rewrite it.
        """
        assert self.machine is not None
        required = set(plan.confinement["required"])
        described: dict[str, str] = {}
        confinement = plan.confinement
        details = {
            IDENTITY: (f"on (uid {plan.uid}, gid {plan.uid})" if confinement["identity"] == "uid"
                       else f"on (user namespace, uid {INSIDE_UID} inside)"),
            PIDS: f"on ({'cgroup' if confinement['pids_by_cgroup'] else 'rlimit'}, "
                  f"at most {confinement['max_processes']})",
            NETWORK: "on (loopback only)",
            MOUNT: "on (minimal read-only root)",
        }
        for layer in LAYERS:
            state = self.machine.layers.get(layer, "off (unknown)")
            if layer in required:
                described[layer] = details.get(layer, state)
            elif state.startswith(("off", "n/a")):
                described[layer] = state
            elif layer == NETWORK and plan.confinement["network"]:
                described[layer] = "off (the package has the host's network)"
            elif layer == IDENTITY and plan.uid is None:
                described[layer] = "off (runs as the service's own user)"
            else:
                described[layer] = "off (not used)"
        return described

    def release(self, plan: SandboxPlan) -> None:
        if plan.uid is not None:
            self.uids.release(plan.uid)

    def _wanted(self, layer: str, every_layer: bool) -> bool:
        return every_layer or (self.machine is not None and self.machine.available(layer))

    def _plan(self, paths: SandboxPaths, *, uid: int | None, network: bool, scratch_bytes: int,
              max_processes: int, cgroup_procs: list[str], every_layer: bool) -> dict[str, Any]:
        namespaces = self._wanted(PID, every_layer) and self._wanted(MOUNT, every_layer)
        if self.as_root:
            identity = "uid" if uid is not None else "none"
            inside_uid = inside_gid = uid if uid is not None else 0
        elif self._wanted(USER, every_layer) and namespaces:
            identity, inside_uid, inside_gid = "userns", INSIDE_UID, INSIDE_UID
        else:
            identity, inside_uid, inside_gid = "none", os.geteuid(), os.getegid()
        root = self.root_layout(paths, inside_uid, inside_gid, network, scratch_bytes) if namespaces else None
        landlock = self.landlock_spec(paths, in_root=root is not None, network=network) \
            if self._wanted(LANDLOCK, every_layer) else None
        distinct_uid = identity in ("uid", "userns")
        required = [] if every_layer else [
            layer for layer in (CGROUP, IDENTITY, USER, PID, MOUNT, NETWORK, IPC, PIDS, NO_NEW_PRIVS, LANDLOCK,
                                SECCOMP) if self.machine is not None and self.machine.available(layer)]
        skipped = set()
        if not namespaces:
            skipped |= {PID, MOUNT, NETWORK, IPC, USER}  # all come with the namespaces step
        if network:
            skipped.add(NETWORK)  # the host's network: nothing to set up
        if identity == "none":
            skipped.add(IDENTITY)
        if not cgroup_procs:
            skipped.add(CGROUP)
        if not (self.cgroups_pids or distinct_uid):
            skipped.add(PIDS)
        required = [layer for layer in required if layer not in skipped]
        return {
            "identity": identity, "uid": inside_uid, "gid": inside_gid,
            "namespaces": namespaces, "network": network or not self._wanted(NETWORK, every_layer), "root": root,
            "cgroup_procs": cgroup_procs,
            "max_processes": max_processes if (self.cgroups_pids or distinct_uid) else None,
            "pids_by_cgroup": self.cgroups_pids,
            "landlock": landlock,
            "seccomp": self._wanted(SECCOMP, every_layer),
            "required": required,
        }

    @staticmethod
    def _inside(path: Path, package_root: Path) -> str:
        relative = path.relative_to(package_root).as_posix()
        return PACKAGE_ROOT if relative == "." else f"{PACKAGE_ROOT}/{relative}"

    def root_layout(self, paths: SandboxPaths, uid: int, gid: int, network: bool,
                    scratch_bytes: int) -> dict[str, Any]:
        steps: list[dict[str, Any]] = []

        def bind(source: str, target: str | None = None, writable: bool = False, from_root: bool = False) -> None:
            steps.append({"kind": "bind", "path": target or source, "source": source, "writable": writable,
                          "from_root": from_root})

        for directory in _SYSTEM_DIRS:
            if os.path.islink(directory):
                steps.append({"kind": "symlink", "path": directory, "source": os.readlink(directory)})
            elif os.path.isdir(directory):
                bind(directory)
        for name, text in self._etc_files(uid, gid).items():
            steps.append({"kind": "file", "path": f"/etc/{name}", "content": text, "mode": 0o644})
        if os.path.islink("/etc/localtime"):
            steps.append({"kind": "symlink", "path": "/etc/localtime", "source": os.readlink("/etc/localtime")})
        if network:
            for shared in ("/etc/resolv.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/gai.conf"):
                if os.path.exists(shared):
                    bind(shared)
        steps.append({"kind": "tmpfs", "path": "/dev", "options": "size=64k,mode=0755"})
        for device in _DEVICES:
            bind(f"/dev/{device}", writable=True)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                             ("stderr", "/proc/self/fd/2")):
            steps.append({"kind": "symlink", "path": f"/dev/{name}", "source": target})
        steps.append({"kind": "tmpfs", "path": SCRATCH, "writable": True,
                      "options": f"size={scratch_bytes},mode=0700,uid={uid},gid={gid}"})
        for directory in (HOME, TMP, SHM):
            steps.append({"kind": "dir", "path": directory, "mode": 0o700, "uid": uid, "gid": gid})
        bind(TMP, "/tmp", writable=True, from_root=True)
        bind(TMP, "/var/tmp", writable=True, from_root=True)
        bind(SHM, "/dev/shm", writable=True, from_root=True)
        # The interpreter and the runtime at the paths they were imported from (after /tmp, which
        # would otherwise cover a runtime kept under it).
        prefix = self.runtime.interpreter_prefix
        if not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS):
            bind(prefix)
        # Each directory the runtime's modules come from shows only those modules: the interpreter's own
        # site-packages and the service's virtualenv hold much else, none of it a sandbox's business.
        masked = [self.runtime.stdlib_site_packages, *self.runtime.path_entries]
        kept_whole = {"/", *_SYSTEM_DIRS, prefix}
        for directory in dict.fromkeys(path for path in masked if os.path.isdir(path)):
            if any(directory == kept or kept.startswith(directory.rstrip("/") + "/") for kept in kept_whole):
                continue  # never cover a whole system directory (or the interpreter) this way
            steps.append({"kind": "tmpfs", "path": directory, "options": "size=64k,mode=0755"})
        for module in self.runtime.modules:
            bind(module)
        bind(str(paths.package_root), PACKAGE_ROOT)
        # Its socket lives on a tiny tmpfs of its own: the supervisor reaches it through /proc/PID/root.
        steps.append({"kind": "tmpfs", "path": SOCKET_DIR, "writable": True,
                      "options": f"size=64k,nr_inodes=16,mode=0700,uid={uid},gid={gid}"})
        steps.append({"kind": "proc", "path": "/proc"})
        return {"mountpoint": str(paths.root_mountpoint), "steps": steps}

    @staticmethod
    def _etc_files(uid: int, gid: int) -> dict[str, str]:
        return {
            "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                      f"sandbox:x:{uid}:{gid}:sandbox:{HOME}:/usr/sbin/nologin\n"
                      "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            "group": f"root:x:0:\nsandbox:x:{gid}:\nnogroup:x:65534:\n",
            "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
            "hostname": "sandbox\n",
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        }

    def landlock_spec(self, paths: SandboxPaths, *, in_root: bool, network: bool) -> dict[str, Any]:
        devices = [f"/dev/{device}" for device in _DEVICES]
        if in_root:
            return {"read_only": ["/"], "read_write": [SCRATCH, "/tmp", "/var/tmp", "/dev/shm", SOCKET_DIR],
                    "device_files": devices, "allow_tcp": network}
        read_only = [*_SYSTEM_DIRS, "/etc", "/proc", *self.runtime.read_only_paths(), str(paths.package_root)]
        return {"read_only": [path for path in read_only if os.path.exists(path)],
                "read_write": [str(paths.home), str(paths.tmp), str(paths.socket_dir)],
                "device_files": devices, "allow_tcp": network}
