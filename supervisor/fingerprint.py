"""The content fingerprint recorded in a manifest: sha256 over the package tree.

Every file and link except the root `manifest.json`, in sorted path order,
each hashed as its kind, its path and its content (or link target), so the
same tree always gives the same fingerprint whoever archived it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

MANIFEST_NAME = "manifest.json"


def tree_fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(_entries(root)):
        full = root / path
        if full.is_symlink():
            digest.update(b"L\0" + path.encode() + b"\0" + os.readlink(full).encode() + b"\0")
            continue
        digest.update(b"F\0" + path.encode() + b"\0" + str(full.stat().st_size).encode() + b"\0")
        with open(full, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def _entries(root: Path) -> list[str]:
    found = []
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = os.path.relpath(directory, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(directory, d))]:
            relative = name if relative_dir == "." else f"{relative_dir}/{name}".replace(os.sep, "/")
            if relative != MANIFEST_NAME and "__pycache__" not in relative.split("/"):
                found.append(relative)
    return found
