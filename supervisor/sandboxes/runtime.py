"""The sandbox runtime on the host: which modules a sandbox imports before package code, and how it is started.

Sandboxes (and the zygote they fork from) run `python -I -S -B`, so neither the
host's site-packages nor its PYTHON* variables reach them, and they write no
bytecode into a package's tree. Their sys.path is the standard library, then a
private runtime dir holding links to just the modules the runtime needs
(RUNTIME_MODULES); a package's own source and vendor dirs go first.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

# What the runtime imports; nothing else installed on the host is visible to a sandbox.
RUNTIME_MODULES = ("cloaca", "sandbox_runtime", "grpc", "google.protobuf", "google._upb", "typing_extensions",
                   "orjson", "pyseccomp")

# Put the runtime dir on the path, then run a runtime entry point's main(argv).
BOOTSTRAP = ("import sys; sys.path.append(sys.argv[1]); import importlib; "
             "importlib.import_module(sys.argv[2]).main(sys.argv[3:])")

_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")
VAR_PREFIX = "CLOACINA_VAR_"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class RuntimeFiles:
    """The host paths a sandbox needs to see: the interpreter and the runtime's modules."""

    runtime_dir: Path
    link_targets: tuple[Path, ...]  # where the runtime dir's links point

    @property
    def interpreter_prefix(self) -> str:
        return os.path.realpath(sys.base_prefix)

    @property
    def executable(self) -> str:
        return os.path.realpath(sys.executable)

    @property
    def stdlib_site_packages(self) -> str:
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        return os.path.join(self.interpreter_prefix, "lib", version, "site-packages")

    def read_only_paths(self) -> list[str]:
        return [self.interpreter_prefix, str(self.runtime_dir), *map(str, self.link_targets)]


def build_runtime_dir(base: Path, modules: tuple[str, ...] = RUNTIME_MODULES) -> RuntimeFiles:
    """A directory of symlinks to each runtime module's real location."""
    runtime = base / "runtime"
    runtime.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(runtime, 0o755)
    targets = []
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
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) != source:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(source, target_is_directory=source.is_dir())
        targets.append(Path(os.path.realpath(source)))
    return RuntimeFiles(runtime, tuple(dict.fromkeys(targets)))


def runtime_command(runtime: RuntimeFiles, entry_point: str, args: list[str]) -> list[str]:
    """`python -I -S -B` running `entry_point.main(args)` with only the runtime importable."""
    return [runtime.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, str(runtime.runtime_dir), entry_point, *args]


def sandbox_environment(extra_vars: dict[str, str] | None = None) -> dict[str, str]:
    """A scrubbed environment: PATH, locale, timezone and the host's CLOACINA_VAR_*; nothing else.

    HOME and TMPDIR are the sandbox's own, added with its plan.
    """
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env["PATH"] = SANDBOX_PATH
    env.setdefault("LANG", "C.UTF-8")
    env.update({key: value for key, value in os.environ.items() if key.startswith(VAR_PREFIX)})
    env.update(extra_vars or {})
    return env
