"""The sandbox runtime on the host: which modules a sandbox imports before package code, and how it is started.

Sandboxes (and the zygote they fork from) run `python -I -S -B`, so neither the
host's site-packages nor its PYTHON* variables reach them, and they write no
bytecode into a package's tree. Their sys.path is the standard library, then the
directories the runtime's modules (RUNTIME_MODULES) live in; a package's own
source and vendor dirs go first. Inside a sandbox's own root those directories
hold nothing but the runtime's modules (isolation.py masks the rest), so nothing
else installed on the host is importable there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass

# What the runtime imports; nothing else installed on the host is visible to a sandbox.
RUNTIME_MODULES = ("cloaca", "sandbox_runtime", "grpc", "google.protobuf", "google._upb", "typing_extensions",
                   "orjson", "simdjson", "csimdjson", "pyseccomp")

# Put the runtime's directories on the path, then run a runtime entry point's main(argv).
BOOTSTRAP = ("import sys, json; sys.path.extend(json.loads(sys.argv[1])); import importlib; "
             "importlib.import_module(sys.argv[2]).main(sys.argv[3:])")

_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class RuntimeFiles:
    """Where the interpreter and the runtime's modules live on the host."""

    path_entries: tuple[str, ...]  # sys.path directories holding the runtime's modules, in order
    modules: tuple[str, ...]  # each runtime module's own directory (a package) or file, real paths

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
        return [self.interpreter_prefix, *self.modules]


def find_runtime(modules: tuple[str, ...] = RUNTIME_MODULES) -> RuntimeFiles:
    """Locate each runtime module and the sys.path entry it is found under."""
    entries: list[str] = []
    found: list[str] = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None:
            raise RuntimeError(f"the sandbox runtime needs module {name!r}, which is not installed")
        if spec.submodule_search_locations:  # a package, maybe a namespace one
            location = os.path.realpath(next(iter(spec.submodule_search_locations)))
        else:
            assert spec.origin is not None
            location = os.path.realpath(spec.origin)
        entry = location
        for _ in name.split("."):
            entry = os.path.dirname(entry)
        entries.append(entry)
        found.append(location)
    return RuntimeFiles(tuple(dict.fromkeys(entries)), tuple(dict.fromkeys(found)))


def runtime_command(runtime: RuntimeFiles, entry_point: str, args: list[str]) -> list[str]:
    """`python -I -S -B` running `entry_point.main(args)` with only the runtime importable."""
    return [runtime.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, json.dumps(list(runtime.path_entries)),
            entry_point, *args]


def sandbox_environment(variables: dict[str, str] | None = None) -> dict[str, str]:
    """A scrubbed environment: PATH, locale, timezone, and the tenant's CLOACINA_VAR_* `variables`.

    HOME and TMPDIR are the sandbox's own, added with its plan (supervisor.variables says which
    variables a tenant gets).
    """
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env["PATH"] = SANDBOX_PATH
    env.setdefault("LANG", "C.UTF-8")
    env.update(variables or {})
    return env
