"""The sandbox's own root: a small tmpfs holding only what the plan lists, then pivot_root into it.

The supervisor decides the layout (`RootLayout`: an ordered list of steps, each a
tmpfs, a bind mount, a symlink or a generated file, at paths inside the new root);
this module only carries it out, in the sandbox's own mount namespace:

    make every mount private  ->  tmpfs at the mount point  ->  each step in order
    ->  pivot_root, detach the old root  ->  remount the root (and masks) read-only

Nothing of the host is visible afterwards except what a step bound, and read-only
binds stay read-only (remounted with MS_RDONLY, keeping the source's locked flags).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from sandbox_runtime.confinement import kernel

_OLD_ROOT = ".old-root"
_ST_FLAGS = ((1, kernel.MS_RDONLY), (2, kernel.MS_NOSUID), (4, kernel.MS_NODEV), (8, kernel.MS_NOEXEC))


@dataclass(frozen=True)
class Step:
    kind: str  # "tmpfs", "bind", "symlink", "file", "proc"
    path: str  # inside the new root, absolute
    source: str = ""  # bind: the host path; symlink: the link's target
    writable: bool = False  # bind: read-write; tmpfs: stays writable after setup
    options: str = ""  # tmpfs: mount data (size=..., mode=..., uid=...)
    content: str = ""  # file: its text
    mode: int = 0o644  # file and directory modes
    uid: int = -1  # dir: its owner, when not the builder
    gid: int = -1
    from_root: bool = False  # bind: `source` is a path inside the new root, not on the host

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Step":
        return cls(**data)


@dataclass(frozen=True)
class RootLayout:
    mountpoint: str  # an empty host directory to build the root on
    steps: list[Step] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RootLayout":
        return cls(data["mountpoint"], [Step.from_dict(step) for step in data["steps"]])


def _locked_flags(source: str) -> int:
    """The flags a bind of `source` inherits and a remount must repeat (or be refused)."""
    try:
        bits = os.statvfs(source).f_flag
    except OSError:
        return 0
    return sum(flag for bit, flag in _ST_FLAGS if bits & bit and flag != kernel.MS_RDONLY)


def _prepare_target(target: str, *, directory: bool) -> None:
    if directory:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))


def _bind(step: Step, target: str, root: str) -> None:
    source = root + step.source if step.from_root else step.source
    _prepare_target(target, directory=os.path.isdir(source))
    flags = kernel.MS_BIND | kernel.MS_REC
    kernel.mount(source, target, None, flags)
    if not step.writable:
        kernel.mount(None, target, None, flags | kernel.MS_REMOUNT | kernel.MS_RDONLY | kernel.MS_NOSUID
                     | _locked_flags(source))


def _run_step(step: Step, root: str, read_only_later: list[str]) -> None:
    target = root + step.path
    if step.kind == "tmpfs":
        _prepare_target(target, directory=True)
        kernel.mount("tmpfs", target, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, step.options or None)
        if not step.writable:
            read_only_later.append(step.path)
    elif step.kind == "bind":
        _bind(step, target, root)
    elif step.kind == "symlink":
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.symlink(step.source, target)
    elif step.kind == "file":
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(step.content)
        os.chmod(target, step.mode)
    elif step.kind == "dir":
        os.makedirs(target, mode=step.mode, exist_ok=True)
        os.chmod(target, step.mode)
        if step.uid >= 0:
            os.chown(target, step.uid, step.gid)
    elif step.kind == "proc":
        _prepare_target(target, directory=True)
        kernel.mount("proc", target, "proc", kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC)
    else:
        raise ValueError(f"unknown root step {step.kind!r}")


def enter_root(layout: RootLayout) -> None:
    """Build the layout's root and make it this mount namespace's `/`. Needs CAP_SYS_ADMIN there."""
    kernel.make_private("/")
    root = layout.mountpoint
    kernel.mount("tmpfs", root, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "size=8m,mode=0755")
    read_only_later: list[str] = []
    for step in layout.steps:
        try:
            _run_step(step, root, read_only_later)
        except OSError as exc:
            raise OSError(exc.errno, f"building the sandbox root, {step.kind} {step.path}: {exc.strerror}") from None
    os.makedirs(os.path.join(root, _OLD_ROOT), exist_ok=True)
    kernel.pivot_root(root, os.path.join(root, _OLD_ROOT))
    os.chdir("/")
    kernel.umount("/" + _OLD_ROOT)
    os.rmdir("/" + _OLD_ROOT)
    for path in read_only_later:
        kernel.remount_readonly(path)
    kernel.remount_readonly("/")
