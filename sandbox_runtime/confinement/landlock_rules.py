"""Landlock: a filesystem, network and IPC fence the process draws around itself.

Kernel interface (Documentation/userspace-api/landlock.rst): the syscalls
landlock_create_ruleset (444), landlock_add_rule (445) and landlock_restrict_self
(446), the same numbers on every architecture. The ABI version decides what can
be restricted: filesystem access from 1 (refer 2, truncate 3, device ioctl 5),
TCP bind/connect from 4, and from 6 the scopes that stop signalling processes and
connecting to abstract Unix sockets outside the sandbox. Rights the running kernel
does not know are left out rather than failing: the fence is best effort per ABI,
and `apply` reports the version it used.

Written with ctypes because the one Python binding on PyPI (`landlock`) covers
only filesystem rules; the network rules and scopes are the point here.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
READ_ONLY = EXECUTE | READ_FILE | READ_DIR
READ_WRITE_FILE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi_version() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is absent or disabled."""
    result = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(result))


@dataclass
class LandlockPolicy:
    """What the sandbox may touch: everything else is refused by the kernel."""

    read_only: list[str] = field(default_factory=list)  # trees it may read and execute
    read_write: list[str] = field(default_factory=list)  # trees it may change
    device_files: list[str] = field(default_factory=list)  # single files read and written (/dev/null)
    allow_tcp: bool = False  # outbound/inbound TCP; when False no TCP bind or connect at all


class Ruleset:
    """A ruleset built (paths opened while this process can still reach them), not yet in force."""

    def __init__(self, fd: int, abi: int) -> None:
        self.fd = fd
        self.abi = abi

    def restrict_self(self) -> int:
        """Put the ruleset in force for this process and all it starts; returns the ABI used.

        Needs no_new_privs (or CAP_SYS_ADMIN), and should run before any thread
        starts, since a ruleset binds only the calling thread and its later children.
        """
        try:
            if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(self.fd), ctypes.c_uint32(0)) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"landlock_restrict_self: {os.strerror(errno)}")
        finally:
            os.close(self.fd)
        return self.abi


def apply(policy: LandlockPolicy) -> int:
    """prepare and restrict_self in one step."""
    return prepare(policy).restrict_self()


def prepare(policy: LandlockPolicy) -> Ruleset:
    """Build the ruleset for `policy`. Raises OSError when the kernel has no Landlock."""
    abi = abi_version()
    if abi < 1:
        raise OSError(95, "Landlock is not available on this kernel")
    fs = _FS_BY_ABI[min(abi, 5)]
    net = 0 if policy.allow_tcp or abi < 4 else NET_BIND_TCP | NET_CONNECT_TCP
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"landlock_create_ruleset: {os.strerror(errno)}")
    try:
        for path in policy.read_only:
            _allow_path(ruleset, path, READ_ONLY & fs, directory_rights=True)
        for path in policy.read_write:
            _allow_path(ruleset, path, fs, directory_rights=True)
        for path in policy.device_files:
            _allow_path(ruleset, path, READ_WRITE_FILE & fs, directory_rights=False)
    except BaseException:
        os.close(ruleset)
        raise
    return Ruleset(ruleset, abi)


def _allow_path(ruleset: int, path: str, rights: int, *, directory_rights: bool) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # nothing there to allow
    try:
        if not directory_rights or not os.path.isdir(path):
            # Rights that only make sense on directories are refused on files.
            rights &= EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
        rule = _PathBeneathAttr(rights, fd)
        if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"landlock_add_rule({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)
