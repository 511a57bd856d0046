"""The host side of cloaca-sandbox: package format, sandboxes, service and CLI.

Embedding:  from supervisor import Supervisor, AsyncSupervisor, SupervisorConfig, PackageLimits

The call path, read top to bottom:
    edge/grpc_service.py   the public gRPC service: auth, tenant quotas, status codes
    tenants.py             tenants' packages, uploads kept in the registry, watched dirs
      registry/              where accepted archives live: embedded (SQLite, data dir) or shared (PostgreSQL)
      registry_sync.py       over a shared registry: what other supervisors record, loaded here too
    core.py                AsyncSupervisor: loaded packages by name, replacement, calls, workflows
    sandboxes/lifecycle.py one package's sandbox: the owner of its incarnations, admission of calls
    sandboxes/link.py      the supervisor's end of the gRPC link to one sandbox
      ⇅ sandbox_runtime/link.py  and  sandbox_runtime/tasks.py inside the sandbox

Beside it: scheduling.py (packages' triggers as their tenant's schedules, fired through
tenants.py like any run) and run_history.py (every workflow run, requested or scheduled).
A client's end: client.py, spreading calls over several supervisors as balancing.py says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.config import PackageLimits, SupervisorConfig
    from supervisor.core import AsyncSupervisor
    from supervisor.facade import Supervisor

_EXPORTS = {"Supervisor": "supervisor.facade", "AsyncSupervisor": "supervisor.core",
            "SupervisorConfig": "supervisor.config", "PackageLimits": "supervisor.config"}


def __getattr__(name: str) -> Any:
    """Imported on first use, so `cloaca-sandbox package` and the client need not load the core."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")


__all__ = ["AsyncSupervisor", "PackageLimits", "Supervisor", "SupervisorConfig"]
