"""The options of `cloaca-sandbox serve` and of the client commands, each validated here and only here.

supervisor/options.py reads them from flags, CLOACA_SANDBOX_* and the config
file; each field's description is its `--help` text.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, FilePath, field_validator, model_validator
from pydantic_settings import NoDecode

from supervisor.config import IsolationLevel, LauncherKind, SupervisorConfig
from supervisor.options import Options

DEFAULT_LISTEN = "127.0.0.1:50051"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "cloaca-sandbox"


def check_address(value: str, what: str) -> str:
    """HOST:PORT (an IPv6 host in brackets) or unix:PATH."""
    if value.startswith("unix:") and len(value) > len("unix:"):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{what} must be HOST:PORT (a port from 0 to 65535) or unix:PATH")
    return value


def _seconds(default: float, description: str, **limits: Any) -> Any:
    return Field(default=default, allow_inf_nan=False, description=description,
                 json_schema_extra={"metavar": "SECONDS"}, **limits)


def _count(default: int, description: str, metavar: str = "N", **limits: Any) -> Any:
    return Field(default=default, description=description, json_schema_extra={"metavar": metavar}, **limits)


def _path(description: str, metavar: str = "FILE") -> Any:
    return Field(default=None, description=description, json_schema_extra={"metavar": metavar})


class ServiceConfig(Options):
    """`cloaca-sandbox serve`."""

    config_section: ClassVar[str] = "serve"

    listen: str = Field(default=DEFAULT_LISTEN, description="where the gRPC API listens: HOST:PORT or unix:PATH",
                        json_schema_extra={"metavar": "ADDRESS"})
    data_dir: Path = Field(default_factory=default_data_dir, json_schema_extra={"metavar": "DIR"},
                           description="stored archives, the package registry and sandboxes' work dirs; "
                                       "one service per data dir")
    packages: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, json_schema_extra={"metavar": "DIR", "repeatable": True},
        description="a directory of archives to load and watch (repeatable; in the environment ':'-separated)")
    api_keys: Path | None = _path("'TENANT KEY' lines; without keys the service listens only on loopback")
    import_timeout: float = _seconds(60.0, "how long importing a package's entry module may take", gt=0)
    call_timeout: float = _seconds(300.0, "how long one task call may run", gt=0)
    memory_limit_mib: int = Field(default=1024, ge=0, json_schema_extra={"metavar": "MIB",
                                                                          "aliases": ("--memory-limit",)},
                                  description="memory per sandbox, its whole process tree; 0 for none")
    max_concurrency: int = _count(4, "calls one sandbox runs at once", ge=1)
    max_queue: int = _count(64, "calls that may wait for a busy sandbox; more are refused at once", ge=0)
    max_context_mib: int = _count(64, "the largest context a request or answer may carry", "MIB", ge=1)
    max_archive_mib: int = _count(512, "the largest archive an upload may send", "MIB", ge=1)
    scratch_mib: int = _count(256, "size of each sandbox's writable home and temp dir", "MIB", ge=1)
    network: bool = Field(default=False, description="give sandboxes the host's network (by default they have none)")
    isolation: IsolationLevel = Field(default=IsolationLevel.DEFAULT, json_schema_extra={"metavar": "LEVEL"},
                                      description="default or strict (strict: no sandbox starts unless every "
                                                  "confinement layer holds)")
    launcher: LauncherKind = Field(default=LauncherKind.ZYGOTE, json_schema_extra={"metavar": "KIND"},
                                   description="zygote (fork sandboxes from a warm interpreter) or spawn")
    tls_cert: Path | None = _path("serve TLS with this certificate (and --tls-key)")
    tls_key: Path | None = _path("the TLS certificate's private key")
    secrets: Path | None = _path("the operator's secrets (TOML, mode 0600): a package receives the ones it declares")
    vars: Path | None = _path("configuration variables per tenant (TOML); the service's own CLOACINA_VAR_* go to "
                              "the default tenant only")
    watch_settle: float = _seconds(1.0, "how long a watched file must stay unchanged before it is loaded", gt=0)
    tenant_requests: int = _count(256, "requests one tenant may have in progress", ge=1)
    tenant_uploads: int = _count(8, "uploads one tenant may have in progress", ge=1)
    upload_idle_timeout: float = _seconds(30.0, "how long an upload may send nothing", gt=0)
    grace: float = _seconds(30.0, "how long calls under way may finish at shutdown", ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="debug, info, warning or error", json_schema_extra={"metavar": "LEVEL"})
    log_format: Literal["text", "json"] = Field(
        default="text", description="text (readable) or json (one object per line)",
        json_schema_extra={"metavar": "FORMAT"})
    metrics_listen: str | None = Field(default=None, json_schema_extra={"metavar": "HOST:PORT"},
                                       description="serve Prometheus metrics over HTTP here (GET /metrics)")
    registry: str | None = Field(
        default=None, json_schema_extra={"metavar": "URL", "secret": True},
        description="the package registry: none for the embedded one in the data dir, or a "
                    "postgresql://USER:PASSWORD@HOST:PORT/DB URL that every supervisor sharing it names (a flag "
                    "shows in the process list: prefer the environment or --registry-file)")
    registry_file: Path | None = _path("a file holding the registry URL (a mounted secret, say)")
    lease_seconds: float = _seconds(15.0, "over a shared registry: how long a supervisor that stops answering "
                                          "still counts as alive and keeps the schedules it fires (it renews "
                                          "every third of it)", ge=3)
    reconcile_interval: float = _seconds(30.0, "over a shared registry: how often everything hosted here is "
                                               "compared with the registry, beside its notifications", gt=0)

    @field_validator("packages", mode="before")
    @classmethod
    def _split_directories(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("memory_limit_mib", mode="before")
    @classmethod
    def _none_is_no_limit(cls, value: Any) -> Any:
        return 0 if value is None else value

    @field_validator("log_level", "log_format", "isolation", "launcher", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return check_address(value, "the address")

    @field_validator("registry")
    @classmethod
    def _check_registry(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from supervisor.registry.database import check_url

        return check_url(value.strip())

    @field_validator("registry_file")
    @classmethod
    def _check_registry_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_registry_file(value)
        return value

    @model_validator(mode="after")
    def _one_registry(self) -> "ServiceConfig":
        if self.registry is not None and self.registry_file is not None:
            raise ValueError("give the registry URL once: --registry or --registry-file, not both")
        return self

    @property
    def registry_url(self) -> str | None:
        """The shared registry's URL (from --registry or --registry-file), or None for the embedded one."""
        if self.registry_file is not None:
            return read_registry_file(self.registry_file)
        return self.registry

    @field_validator("metrics_listen")
    @classmethod
    def _check_metrics_listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("unix:"):
            raise ValueError("the metrics address must be HOST:PORT (Prometheus scrapes over TCP)")
        return check_address(value, "the metrics address")

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        if self.metrics_listen is None:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host.strip("[]"), int(port)

    def supervisor_config(self) -> SupervisorConfig:
        return SupervisorConfig(
            work_dir=self.data_dir / "work", import_timeout=self.import_timeout, call_timeout=self.call_timeout,
            memory_limit_mib=self.memory_limit_mib or None, max_concurrency=self.max_concurrency,
            max_queue=self.max_queue, max_context_mib=self.max_context_mib, scratch_mib=self.scratch_mib,
            network=self.network, isolation=self.isolation, launcher=self.launcher, secrets_file=self.secrets,
            vars_file=self.vars)


class ClientConfig(Options):
    """The client commands (list, call, run, upload, logs, ...)."""

    config_section: ClassVar[str] = "client"

    server: str = Field(default=DEFAULT_LISTEN, json_schema_extra={"metavar": "ADDRESS"},
                        description="the service's address: HOST:PORT, several as HOST:PORT,HOST:PORT (calls are "
                                    "spread round-robin), dns:///NAME:PORT (every record of the name) or unix:PATH")
    api_key: str | None = Field(default=None, description="sent as 'authorization: Bearer KEY'",
                                json_schema_extra={"metavar": "KEY"})
    tls_ca: FilePath | None = Field(default=None, json_schema_extra={"metavar": "FILE"},
                                    description="trust this CA certificate: the service uses TLS")

    @field_validator("server")
    @classmethod
    def _check_server(cls, value: str) -> str:
        from supervisor.balancing import check_server

        return check_server(value)


def read_registry_file(path: Path) -> str:
    """The URL in a registry file (surrounding whitespace ignored); ValueError naming what is wrong."""
    from supervisor.registry.database import check_url

    try:
        text = path.expanduser().read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"the registry file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"the registry file {path} is not text") from None
    if not text:
        raise ValueError(f"the registry file {path} is empty")
    return check_url(text)


def is_loopback(listen: str) -> bool:
    if listen.startswith("unix:"):
        return True
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
