"""Recognising and safely extracting package archives.

Extraction is a security boundary: every member is checked before a byte
is written, and a refused archive leaves nothing behind.
"""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from supervisor.errors import PackageError

_MAGIC = (
    (b"BZh", "bz2"),
    (b"\x1f\x8b", "gz"),
    (b"\xfd7zXZ\x00", "xz"),
)


class ArchiveError(PackageError):
    """The archive is unreadable, unsafe or too large; `code` says which."""

    code = "invalid_archive"


class NotAnArchiveError(ArchiveError):
    code = "not_an_archive"


class UnsafeArchiveError(ArchiveError):
    code = "unsafe_archive"


class ArchiveTooLargeError(ArchiveError):
    code = "archive_too_large"


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps that stop a compression bomb long before it fills a disk."""

    max_total_bytes: int = 512 * 1024 * 1024
    max_files: int = 20_000
    max_file_bytes: int = 256 * 1024 * 1024


def detect_compression(head: bytes) -> str:
    """'bz2', 'gz', 'xz' or 'tar' from the first bytes; NotAnArchiveError otherwise."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise NotAnArchiveError(
        "not a package archive: expected a tar archive compressed with bzip2, gzip or xz, or a plain tar"
    )


def _open(source: BinaryIO) -> tarfile.TarFile:
    head = source.read(512)
    source.seek(0)
    compression = detect_compression(head)
    mode = "r|" if compression == "tar" else f"r|{compression}"
    try:
        return tarfile.open(fileobj=source, mode=mode)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise NotAnArchiveError(f"not a readable {compression} tar archive: {exc}") from None


def _clean_name(name: str) -> str:
    """The member's path relative to the package root, or UnsafeArchiveError."""
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"archive entry {name!r} has a character not allowed in a path")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"archive entry {name!r} is an absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive entry {name!r} has a '..' component")
    return "/".join(parts)


def _link_target(member_path: str, linkname: str, symbolic: bool) -> str:
    """Where a link points, relative to the root; refused if outside it."""
    if linkname.startswith("/"):
        raise UnsafeArchiveError(f"link {member_path!r} points to the absolute path {linkname!r}")
    base = posixpath.dirname(member_path) if symbolic else ""
    joined = posixpath.normpath(posixpath.join(base, linkname))
    if joined == ".." or joined.startswith("../"):
        raise UnsafeArchiveError(f"link {member_path!r} points outside the package ({linkname!r})")
    return "" if joined == "." else joined


def extract_archive(source: BinaryIO, destination: Path, limits: ExtractionLimits = ExtractionLimits()) -> None:
    """Extract `source` into the new directory `destination`.

    Refuses absolute paths, '..', links leaving the package, device files,
    FIFOs and anything over the limits. On any refusal `destination` is
    removed, so nothing is left on disk.
    """
    destination.mkdir(mode=0o700)
    try:
        _extract_members(source, destination, limits)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise


def _extract_members(source: BinaryIO, root: Path, limits: ExtractionLimits) -> None:
    total = 0
    count = 0
    seen: set[str] = set()
    with _open(source) as archive:
        try:
            for member in archive:
                count += 1
                if count > limits.max_files:
                    raise ArchiveTooLargeError(f"archive has more than {limits.max_files} entries")
                path = _clean_name(member.name)
                if not path:
                    continue  # the root directory itself
                if path in seen and not member.isdir():
                    raise UnsafeArchiveError(f"archive entry {path!r} appears more than once")
                seen.add(path)
                target = root / path
                _check_parent_inside(root, target)
                if member.isdir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                elif member.isreg():
                    if member.size > limits.max_file_bytes:
                        raise ArchiveTooLargeError(
                            f"archive entry {path!r} is {member.size} bytes; the limit is {limits.max_file_bytes}"
                        )
                    total += member.size
                    if total > limits.max_total_bytes:
                        raise ArchiveTooLargeError(
                            f"archive expands to more than {limits.max_total_bytes} bytes"
                        )
                    _write_file(archive, member, target)
                elif member.issym():
                    _link_target(path, member.linkname, symbolic=True)
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    source_path = _link_target(path, member.linkname, symbolic=False)
                    linked = root / source_path
                    if source_path not in seen or not linked.is_file() or linked.is_symlink():
                        raise UnsafeArchiveError(
                            f"hard link {path!r} must point to a file earlier in the package, not {member.linkname!r}"
                        )
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    shutil.copyfile(linked, target)
                else:
                    kind = "device file" if member.ischr() or member.isblk() else (
                        "FIFO" if member.isfifo() else "special file")
                    raise UnsafeArchiveError(f"archive entry {path!r} is a {kind}; packages hold only files, directories and links")
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, ArchiveError):
                raise
            raise NotAnArchiveError(f"archive is corrupt or truncated: {exc}") from None


def _check_parent_inside(root: Path, target: Path) -> None:
    # A member written through a symlinked directory could land outside the
    # root even though its own name is clean, so resolve what exists so far.
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    resolved = parent.resolve()
    root_resolved = root.resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UnsafeArchiveError(f"archive entry {target.relative_to(root)} would be written outside the package")


def _write_file(archive: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    stream = archive.extractfile(member)
    assert stream is not None  # regular files always have a stream
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(stream, out, 1024 * 1024)


def open_source(archive: bytes | str | os.PathLike[str]) -> BinaryIO:
    """A readable binary stream over archive bytes or a path."""
    if isinstance(archive, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(archive))
    return open(archive, "rb")
