"""seccomp: the system calls a task never needs are refused with EPERM.

Built with pyseccomp (a ctypes binding to libseccomp, the library behind Docker's
and systemd's filters). The filter allows by default and denies a list in the spirit
of Docker's default profile: debugging and memory access across processes, mounts
and namespaces (so a task cannot undo its confinement), kernel modules, keyrings,
BPF, perf, io_uring, time, swap, reboot. `clone` is refused only when it asks for a
new namespace, `clone3` answers ENOSYS so the C library falls back to `clone`, the
terminal ioctls that inject input are refused, and so are sockets of the families a
network namespace does not confine (AF_VSOCK reaches the hypervisor and other VMs)
or that only widen the kernel's surface (AF_ALG, AF_XDP, AF_KEY, ...). System calls of a foreign
architecture (the i386 ABI on x86_64) kill the process, libseccomp's default.
"""

from __future__ import annotations

import errno

DENIED = (
    # other processes, and undoing confinement
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "chroot",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    # the kernel itself
    "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load",
    "init_module", "finit_module", "delete_module", "create_module", "reboot", "swapon", "swapoff",
    "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie", "iopl", "ioperm", "vhangup",
    "nfsservctl", "uselib", "fanotify_init",
    "keyctl", "add_key", "request_key",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)

# Socket families a network namespace does not confine (vsock reaches the hypervisor and other VMs)
# or that only widen the kernel's surface: refused with EAFNOSUPPORT, as if not built in.
_REFUSED_FAMILIES = {
    "AF_KEY": 15, "AF_RDS": 21, "AF_CAN": 29, "AF_TIPC": 30, "AF_BLUETOOTH": 31, "AF_IEEE802154": 36,
    "AF_ALG": 38, "AF_NFC": 39, "AF_VSOCK": 40, "AF_KCM": 41, "AF_QIPCRTR": 42, "AF_SMC": 43, "AF_XDP": 44,
    "AF_MCTP": 45,
}
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C


_prepared: tuple[object, int] | None = None  # (the filter, its rule count), built once per process


def prepare() -> tuple[object, int]:
    """Build the filter (once; the zygote does it before forking, so each sandbox only loads it)."""
    global _prepared
    if _prepared is None:
        _prepared = _build()
    return _prepared


def install() -> int:
    """Load the filter into this process (inherited by every thread and child started after).

    Needs no_new_privs set first. Returns how many rules were installed; raises
    ImportError or OSError when libseccomp is missing or the kernel refuses.
    """
    rules, count = prepare()
    rules.load()  # type: ignore[attr-defined]
    return count


def _build() -> tuple[object, int]:
    import pyseccomp as seccomp

    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    count = 0
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
            count += 1
        except (ValueError, OSError):
            pass  # a syscall this libseccomp or architecture does not know
    for flag in _NAMESPACE_FLAGS:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        count += 1
    try:
        rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        count += 1
    except (ValueError, OSError):
        pass
    no_family = seccomp.ERRNO(errno.EAFNOSUPPORT)
    for family in _REFUSED_FAMILIES.values():
        rules.add_rule(no_family, "socket", seccomp.Arg(0, seccomp.EQ, family))
        count += 1
    for request in (_TIOCSTI, _TIOCLINUX):
        rules.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
        count += 1
    return rules, count
