"""How a sandbox interpreter is started: its sys.path and its environment.

The child runs `python -I -S -B`, so neither the host's site-packages nor
its PYTHON* variables reach it, and it writes no bytecode into the package tree. Its sys.path is the package's source and
vendor dirs, the standard library, then a private runtime dir holding
links to just the modules the sandbox runtime itself needs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

# What the sandbox runtime imports; nothing else of the host environment is visible.
RUNTIME_MODULES = ("cloaca", "sandbox_runtime", "grpc", "google.protobuf", "google._upb", "typing_extensions")

# Put the package's dirs first, the runtime last, then run a sandbox entry point.
BOOTSTRAP = (
    "import sys, json; paths = json.loads(sys.argv[1]); sys.path[:0] = paths; "
    "sys.path.append(sys.argv[2]); import importlib; "
    "sys.exit(importlib.import_module(sys.argv[3]).main(sys.argv[4:], paths))"
)

_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ")
VAR_PREFIX = "CLOACINA_VAR_"


def build_runtime_dir(base: Path, modules: tuple[str, ...] = RUNTIME_MODULES) -> Path:
    """A directory of symlinks to each runtime module's real location."""
    runtime = base / "runtime"
    runtime.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise RuntimeError(f"the sandbox runtime needs module {name!r}, which is not installed")
        link = runtime.joinpath(*name.split("."))
        if spec.submodule_search_locations:  # a package, maybe a namespace one
            source = Path(next(iter(spec.submodule_search_locations)))
        else:
            assert spec.origin is not None
            source = Path(spec.origin)
            link = link.with_name(source.name)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(source, target_is_directory=source.is_dir())
    return runtime


def sandbox_command(package_paths: list[str], runtime_dir: Path, entry_point: str, args: list[str]) -> list[str]:
    return [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, json.dumps(package_paths), str(runtime_dir),
            entry_point, *args]


def sandbox_environment(home: Path, tmp: Path, extra_vars: dict[str, str] | None = None) -> dict[str, str]:
    """A scrubbed environment: PATH, locale, a private HOME and TMPDIR, and CLOACINA_VAR_*."""
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env["HOME"] = str(home)
    env["TMPDIR"] = str(tmp)
    env.update({key: value for key, value in os.environ.items() if key.startswith(VAR_PREFIX)})
    env.update(extra_vars or {})
    return env
