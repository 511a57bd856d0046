"""A sandbox's start, the same whichever way it was born (forked from the zygote, or spawned):

    confine (sandbox_runtime.confinement)  ->  environment, cwd, sys.path
    ->  serve the link on its socket  ->  hide the runtime's copies of modules the
    package vendors  ->  import the entry module  ->  answer calls until killed

`StartSpec` is what the supervisor sends; `run` never returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sandbox_runtime import capture
from sandbox_runtime.confinement import ConfinementError, Plan, confine, kernel, seccomp_filter
from sandbox_runtime.markers import PROBE_MARK

EXIT_CONFINEMENT_FAILED = 78  # EX_CONFIG
EXIT_START_FAILED = 70  # EX_SOFTWARE

# Modules the runtime itself must keep whatever a package vendors (the package's
# copies are refused at load, as reserved names).
_RUNTIME_OWNED = ("cloaca", "sandbox_runtime")


@dataclass
class StartSpec:
    entry_module: str
    package_paths: list[str]  # sys.path entries as the sandbox sees them: source, then vendor
    socket_path: str  # as the sandbox sees it
    token: str
    max_concurrency: int
    output_limit: int
    max_context_bytes: int
    package_name: str = ""
    workflow_name: str = ""  # what the package's module-level tasks register under
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    hide_modules: list[str] = field(default_factory=list)  # top-level names the package provides itself
    executable: str = ""  # what sys.executable should say inside
    confinement: Plan = field(default_factory=Plan)
    probe: bool = False  # only confine, report what held on stdout, and exit

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StartSpec":
        data = dict(data)
        data["confinement"] = Plan.from_dict(data.get("confinement") or {})
        return cls(**data)


def hide_modules(names: list[str]) -> None:
    """Forget the runtime's imports of modules the package brings its own copy of.

    The runtime keeps its references (its link keeps working); the package's
    `import` then finds its vendored copy first on sys.path.
    """
    wanted = {name for name in names if name not in _RUNTIME_OWNED}
    for module in list(sys.modules):
        if module.partition(".")[0] in wanted:
            del sys.modules[module]


def _prepare_process(spec: StartSpec) -> None:
    os.environ.clear()
    os.environ.update(spec.env)
    os.chdir(spec.cwd)
    sys.path[:0] = spec.package_paths
    # Contexts may nest 1024 levels (tasks.MAX_NESTING); copying one takes a frame or two a level.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    if spec.executable:
        sys.executable = spec.executable
    capture.install()


def run(spec: StartSpec) -> NoReturn:
    """Confine this process, then serve the package; exits the process, never returns."""
    from sandbox_runtime.declarations import PackageIdentity
    from sandbox_runtime.link import SandboxServicer, serve

    _die_with_parent()
    try:
        if spec.confinement.seccomp:
            try:
                seccomp_filter.prepare()  # finds libseccomp while the host's root (and ld.so.cache) is visible
            except Exception:  # noqa: BLE001 - confine reports the layer missing, or fails if it is required
                pass
        report = confine(spec.confinement)
        if spec.probe:
            os.write(1, (PROBE_MARK + json.dumps(report.layers) + "\n").encode())
            os._exit(0)
        _prepare_process(spec)
        identity = PackageIdentity(spec.package_name or spec.entry_module, spec.workflow_name or spec.entry_module)
        servicer = SandboxServicer(spec.entry_module, identity, spec.package_paths, spec.token, spec.output_limit,
                                   spec.max_context_bytes, report.layers)
        asyncio.run(serve(spec.socket_path, servicer, before_import=lambda: hide_modules(spec.hide_modules),
                          message_limit=spec.max_context_bytes + 16 * 1024 * 1024))
    except ConfinementError as exc:
        print(f"sandbox refused to start: {exc}", file=sys.__stderr__, flush=True)
        os._exit(EXIT_CONFINEMENT_FAILED)
    except BaseException:  # noqa: BLE001 - say why on stderr, which the supervisor keeps
        traceback.print_exc(file=sys.__stderr__)
        sys.__stderr__.flush()
        os._exit(EXIT_START_FAILED)
    os._exit(0)


def _die_with_parent() -> None:
    """Whoever started us (the zygote, or the supervisor) going means we go too."""
    parent = os.getppid()
    kernel.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(EXIT_START_FAILED)


def main(argv: list[str]) -> NoReturn:
    """Spawned start: `python -I -S -B ... sandbox_runtime.start`, the spec as JSON on stdin."""
    spec = StartSpec.from_dict(json.loads(sys.stdin.buffer.read()))
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    run(spec)
