"""Builds real packages from module source with the real packager, for sandbox tests."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Sequence

from supervisor.build import build_package

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Imports fine until its task breaks it: after that every restart fails, so the
# supervisor must give up and mark the package failed.
FRAGILE = '''
import os
import cloaca
if os.path.exists(os.path.join(os.environ["HOME"], "broken")):
    raise RuntimeError("configuration is broken")

@cloaca.task(id="break_it")
def break_it(context):
    open(os.path.join(os.environ["HOME"], "broken"), "w").close()
    os._exit(1)
'''


def build(root: Path, name: str, source: str, *, module: str | None = None,
          files: dict[str, str] | None = None, vendor: Sequence[Path] = (), layout: str = "root",
          version: str = "1.0.0", blobs: dict[str, bytes] | None = None, import_timeout: float = 60) -> Path:
    """Write a project (entry module `module`, default the name with underscores) and package it.

    `files` are more source files, relative to the source dir (the project, or src/ for layout="src");
    `blobs` are binary files relative to the project.
    """
    module = module or name.replace("-", "_")
    project = root / f"{name}-{version}-project"
    source_dir = project / "src" if layout == "src" else project
    (source_dir / module).mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "{version}"\n\n[tool.cloaca]\nentry_module = "{module}"\n')
    (source_dir / module / "__init__.py").write_text(textwrap.dedent(source))
    for relative, text in (files or {}).items():
        path = source_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for relative, data in (blobs or {}).items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_bytes(data)
    for source_file in vendor:
        (project / "vendor").mkdir(exist_ok=True)
        shutil.copy(source_file, project / "vendor" / source_file.name)
    output, _, _ = build_package(project, root / f"{name}-{version}.cloacina", import_timeout=import_timeout)
    return output
