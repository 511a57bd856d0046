"""Confinement: the step of a sandbox's start between its birth and any package code.

`confine(plan)` runs in the freshly born child (forked from the zygote, or a
spawned interpreter) while it is still single-threaded, and returns only in the
process that will run the package, with every layer the plan asks for in place:

    joined its cgroups (memory, pids)               the supervisor made them
    unshare: mount, pid, ipc, uts, cgroup, net      (+ user, when not root)
      fork: the child is pid 1 of the new pid namespace; this process stays
      as its parent only to pass its exit status on, and dies with it
    the minimal root (filesystem.enter_root)        read-only except scratch
    loopback up, hostname "sandbox"
    identity: an unprivileged uid (root service) or no capabilities (user namespace)
    parent-death signal, rlimits, no_new_privs
    Landlock (landlock_rules)                       a second fence, also without namespaces
    seccomp (seccomp_filter)                        last: it refuses what the steps above used

Each layer is `required` (failing it fails the start) or best effort (failing it
is recorded). The `Report` says what holds; the sandbox sends it to the
supervisor with its discovery answer.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sandbox_runtime.confinement import kernel, landlock_rules, seccomp_filter
from sandbox_runtime.confinement.filesystem import RootLayout, enter_root

# Layer names, as the supervisor, the report and the README use them.
CGROUP, USER, PID, MOUNT, NETWORK, IPC = "cgroup", "user", "pid", "mount", "network", "ipc"
IDENTITY, NO_NEW_PRIVS, LANDLOCK, SECCOMP, PIDS = "identity", "no_new_privs", "landlock", "seccomp", "pids"
LAYERS = (IDENTITY, USER, PID, MOUNT, NETWORK, IPC, CGROUP, PIDS, NO_NEW_PRIVS, LANDLOCK, SECCOMP)


class ConfinementError(RuntimeError):
    """A required layer could not be put in place; the sandbox must not run."""


@dataclass
class Plan:
    """What the supervisor asks of one sandbox. Sent as JSON in the start request."""

    identity: str = "none"  # "uid": switch to uid/gid (the service runs as root); "userns"; "none"
    uid: int = 0  # the sandbox's uid as it will see it (host uid in "uid" mode, inside uid in "userns")
    gid: int = 0
    namespaces: bool = False  # mount, pid, ipc, uts and cgroup namespaces
    network: bool = False  # keep the host's network (otherwise a private one with loopback only)
    root: RootLayout | None = None  # the minimal root; needs `namespaces`
    cgroup_procs: list[str] = field(default_factory=list)  # cgroup.procs files to join first
    max_processes: int | None = None  # the most processes and threads the sandbox may have
    pids_by_cgroup: bool = False  # the cgroups joined hold max_processes; else RLIMIT_NPROC does
    landlock: LandlockSpec | None = None
    seccomp: bool = False
    required: list[str] = field(default_factory=list)  # layers that must hold

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Plan":
        data = dict(data)
        if data.get("root") is not None:
            data["root"] = RootLayout.from_dict(data["root"])
        if data.get("landlock") is not None:
            data["landlock"] = LandlockSpec(**data["landlock"])
        return cls(**data)


@dataclass
class LandlockSpec:
    read_only: list[str] = field(default_factory=list)
    read_write: list[str] = field(default_factory=list)
    device_files: list[str] = field(default_factory=list)
    allow_tcp: bool = False


@dataclass
class Report:
    """Layer -> "on", "on (detail)", "off (reason)" or "not requested"."""

    layers: dict[str, str] = field(default_factory=dict)

    def on(self, layer: str, detail: str = "") -> None:
        self.layers[layer] = f"on ({detail})" if detail else "on"

    def off(self, layer: str, reason: str) -> None:
        self.layers[layer] = f"off ({reason})"


def _attempt(plan: Plan, report: Report, layer: str, action: Any, detail: str = "") -> bool:
    try:
        result = action()
    except Exception as exc:  # noqa: BLE001 - a layer that fails for any reason does not hold
        if layer in plan.required:
            raise ConfinementError(f"the {layer} layer could not be set up: {exc}") from None
        report.off(layer, str(exc))
        return False
    report.on(layer, detail or (str(result) if isinstance(result, str) else ""))
    return True


def _join_cgroups(paths: list[str]) -> None:
    for path in paths:
        with open(path, "w") as handle:
            handle.write(str(os.getpid()))


def _namespace_flags(plan: Plan) -> int:
    flags = kernel.CLONE_NEWNS | kernel.CLONE_NEWPID | kernel.CLONE_NEWIPC | kernel.CLONE_NEWUTS
    flags |= kernel.CLONE_NEWCGROUP
    if not plan.network:
        flags |= kernel.CLONE_NEWNET
    if plan.identity == "userns":
        flags |= kernel.CLONE_NEWUSER
    return flags


def _pass_on_exit_status(child: int) -> NoReturn:
    """Wait for the namespace's pid 1 and leave with its status (re-raising its signal)."""
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(70)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 70)


def _enter_namespaces(plan: Plan, report: Report) -> bool:
    """unshare, then fork: returns True in the new pid namespace's pid 1; the parent never returns."""
    outside_uid, outside_gid = os.geteuid(), os.getegid()
    try:
        kernel.unshare(_namespace_flags(plan))
        if plan.identity == "userns":
            kernel.write_id_maps("self", plan.uid, outside_uid, plan.gid, outside_gid)
    except OSError as exc:
        if plan.required and {PID, MOUNT, NETWORK, USER} & set(plan.required):
            raise ConfinementError(f"could not create the sandbox's namespaces: {exc}") from None
        for layer in (PID, MOUNT, IPC, NETWORK, USER):
            report.off(layer, str(exc))
        return False
    child = os.fork()
    if child:
        _pass_on_exit_status(child)
    for layer in (PID, MOUNT, IPC):
        report.on(layer)
    report.on(NETWORK, "host network shared" if plan.network else "loopback only")
    if plan.identity == "userns":
        report.on(USER, f"uid {plan.uid} inside, {outside_uid} outside")
    return True


def _drop_identity(plan: Plan) -> str:
    if plan.identity == "uid":
        for capability in range(kernel.last_capability() + 1):
            try:
                kernel.prctl(kernel.PR_CAPBSET_DROP, capability)
            except OSError:
                pass
        os.setgroups([])
        os.setresgid(plan.gid, plan.gid, plan.gid)
        os.setresuid(plan.uid, plan.uid, plan.uid)
        return f"uid {plan.uid}, gid {plan.gid}"
    if plan.identity == "userns":
        kernel.drop_all_capabilities()
        return "no capabilities"
    raise OSError(1, "the service is not root and has no user namespace: the sandbox runs as the service's user")


def _landlock_ruleset(spec: LandlockSpec) -> landlock_rules.Ruleset:
    return landlock_rules.prepare(landlock_rules.LandlockPolicy(
        read_only=spec.read_only, read_write=spec.read_write, device_files=spec.device_files,
        allow_tcp=spec.allow_tcp))


def confine(plan: Plan) -> Report:
    """Put every layer of `plan` in place; see the module doc. Single-threaded callers only."""
    report = Report()
    if plan.cgroup_procs:
        joined = _attempt(plan, report, CGROUP, lambda: _join_cgroups(plan.cgroup_procs))
        if joined and plan.pids_by_cgroup and plan.max_processes is not None:
            report.on(PIDS, f"cgroup, at most {plan.max_processes}")
    else:
        report.off(CGROUP, "no writable cgroup")
    in_namespaces = plan.namespaces and _enter_namespaces(plan, report)
    if not in_namespaces:
        # No pid namespace gathers what the sandbox starts: as their subreaper it keeps even
        # daemons that left its session among its descendants, where the supervisor finds them.
        kernel.become_subreaper()
    else:
        if plan.root is not None:
            root = plan.root
            _attempt(plan, report, MOUNT, lambda: enter_root(root), "minimal read-only root")
        if not plan.network:
            _attempt(plan, report, NETWORK, kernel.loopback_up, "loopback only")
        try:
            kernel.sethostname("sandbox")
        except OSError:
            pass
    # The Landlock rules are built while every path they name can still be opened (before the
    # identity changes); they come into force after no_new_privs, below.
    ruleset: list[landlock_rules.Ruleset] = []
    if plan.landlock is not None:
        spec = plan.landlock
        _attempt(plan, report, LANDLOCK, lambda: ruleset.append(_landlock_ruleset(spec)))
    if plan.identity == "none":
        report.off(IDENTITY, "runs as the service's own user")
    else:
        _attempt(plan, report, IDENTITY, lambda: _drop_identity(plan))
    # After any change of identity (which clears it), and checked against a parent that died first.
    kernel.set_dumpable(True)
    parent = os.getppid()
    kernel.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(70)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if plan.max_processes is not None and PIDS not in report.layers:
        _attempt(plan, report, PIDS, lambda: resource.setrlimit(
            resource.RLIMIT_NPROC, (plan.max_processes, plan.max_processes)), f"rlimit, at most {plan.max_processes}")
    _attempt(plan, report, NO_NEW_PRIVS, kernel.set_no_new_privs)
    if ruleset:
        _attempt(plan, report, LANDLOCK, lambda: f"ABI {ruleset[0].restrict_self()}")
    elif plan.landlock is None:
        report.off(LANDLOCK, "not requested")
    if plan.seccomp:
        _attempt(plan, report, SECCOMP, lambda: f"{seccomp_filter.install()} rules")
    else:
        report.off(SECCOMP, "not requested")
    if plan.identity == "uid":
        report.layers[USER] = "n/a (a uid of its own instead)"
    for layer in LAYERS:
        report.layers.setdefault(layer, "off (not requested)")
    failed = [f"{layer} {report.layers[layer]}" for layer in plan.required
              if not report.layers[layer].startswith(("on", "n/a"))]
    if failed:
        raise ConfinementError("required layers do not hold: " + ", ".join(failed))
    sys.stdout.flush()
    return report
