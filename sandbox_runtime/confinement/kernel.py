"""The Linux system calls confinement needs that Python's `os` module lacks, through ctypes.

Kernel interfaces used here, each documented in its man page:
- unshare(2)        new user, mount, pid, network, IPC, UTS and cgroup namespaces;
- mount(2), umount2(2), pivot_root(2)   the sandbox's minimal root;
- prctl(2)          PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, PR_SET_DUMPABLE,
                    PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER;
- capset(2)         clearing the capabilities a user-namespace root starts with;
- sethostname(2)    the sandbox's own name in its UTS namespace;
- ioctl(2) SIOCGIFFLAGS/SIOCSIFFLAGS   bringing up the loopback of a new network namespace.

Landlock and seccomp have their own modules (landlock_rules, seccomp_filter). Every
function raises OSError with the call's errno and a message naming what failed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import platform
import socket
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _syscall_number(table: dict[str, int], name: str) -> int:
    machine = platform.machine()
    if machine not in table:
        raise OSError(38, f"{name}: no syscall number known for {machine}")
    return table[machine]


def _path(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(_libc.mount(_path(source), _path(target), _path(fstype), flags, _path(data)),
           f"mount {source or fstype} on {target}")


def bind(source: str, target: str, *, writable: bool = False, recursive: bool = True) -> None:
    """Bind `source` at `target`; read-only (and nosuid, nodev) unless `writable`."""
    flags = MS_BIND | (MS_REC if recursive else 0)
    mount(source, target, None, flags)
    if not writable:
        # A bind mount takes its flags only on a remount; the locked flags of the
        # original mount (nodev, nosuid) must be kept or the remount is refused.
        mount(None, target, None, flags | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def make_private(target: str = "/") -> None:
    mount(None, target, None, MS_REC | MS_PRIVATE)


def remount_readonly(target: str) -> None:
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def umount(target: str, detach: bool = True) -> None:
    _check(_libc.umount2(_path(target), MNT_DETACH if detach else 0), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _syscall_number(_SYS_PIVOT_ROOT, "pivot_root")
    _check(_libc.syscall(number, _path(new_root), _path(put_old)), f"pivot_root({new_root})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_parent_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def set_dumpable(dumpable: bool) -> None:
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def become_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 40


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_all_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets for good."""
    for capability in range(last_capability() + 1):
        try:
            prctl(PR_CAPBSET_DROP, capability)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: the kernel does not know this capability
                raise
    try:
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # kernels before 4.3 have no ambient set
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    number = _syscall_number(_SYS_CAPSET, "capset")
    _check(_libc.syscall(number, ctypes.byref(header), ctypes.byref(data)), "capset")


def sethostname(name: str) -> None:
    encoded = name.encode()
    _check(_libc.sethostname(encoded, len(encoded)), "sethostname")


def loopback_up() -> None:
    """Bring up `lo` in this (new) network namespace, so the sandbox can talk to itself."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def write_id_maps(pid: int | str, inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int) -> None:
    """Map one id each way in a new user namespace (a process may map only its own ids)."""
    base = f"/proc/{pid}"
    with open(f"{base}/setgroups", "w") as handle:
        handle.write("deny")
    with open(f"{base}/uid_map", "w") as handle:
        handle.write(f"{inside_uid} {outside_uid} 1")
    with open(f"{base}/gid_map", "w") as handle:
        handle.write(f"{inside_gid} {outside_gid} 1")
