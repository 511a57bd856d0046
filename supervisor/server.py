"""Assembling the daemon: the gRPC server, health, reflection, keys, TLS, watched dirs."""

from __future__ import annotations

import ipaddress
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel, ConfigDict, Field

from supervisor.api import supervisor_pb2, supervisor_pb2_grpc
from supervisor.auth import Authenticator, load_api_keys
from supervisor.config import MIB, SupervisorConfig
from supervisor.host import PackageHost, default_data_dir
from supervisor.service import SupervisorService
from supervisor.watcher import DirectoryWatcher

log = logging.getLogger(__name__)

SERVICE_NAME = supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"].full_name


class ServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    listen: str = "127.0.0.1:50051"
    data_dir: Path = Field(default_factory=default_data_dir)
    packages: list[Path] = Field(default_factory=list)
    api_keys: Path | None = None
    import_timeout: float = Field(default=60.0, gt=0)
    call_timeout: float = Field(default=300.0, gt=0)
    memory_limit_mib: int | None = Field(default=1024, gt=0)
    max_concurrency: int = Field(default=4, ge=1)
    max_queue: int = Field(default=64, ge=0)
    max_context_mib: int = Field(default=64, ge=1)
    max_archive_mib: int = Field(default=512, ge=1)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    watch_interval: float = Field(default=1.0, gt=0)
    workers: int = Field(default=256, ge=4, description="requests served at once; more are refused at once")


class ConfigError(ValueError):
    pass


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


class SupervisorServer:
    """The running service. start() returns once it listens; packages load in the background."""

    def __init__(self, config: ServiceConfig) -> None:
        keys = load_api_keys(config.api_keys) if config.api_keys else None
        if keys is None and not is_loopback(config.listen):
            raise ConfigError(f"refusing to listen on {config.listen} without API keys: anyone who can reach it "
                              "could run code. Give --api-keys FILE, or listen on 127.0.0.1")
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        self.config = config
        self.host = PackageHost(config.data_dir, SupervisorConfig(
            work_dir=config.data_dir / "work", import_timeout=config.import_timeout,
            call_timeout=config.call_timeout, memory_limit_mib=config.memory_limit_mib,
            max_concurrency=config.max_concurrency, max_queue=config.max_queue))
        message_limit = config.max_context_mib * MIB + MIB  # a context plus the message around it
        # Each call waiting on a sandbox holds a thread; past `workers` gRPC refuses
        # with RESOURCE_EXHAUSTED instead of queueing callers where nobody sees them.
        self.server = grpc.server(ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
                                  maximum_concurrent_rpcs=config.workers,
                                  options=[("grpc.max_receive_message_length", message_limit),
                                           ("grpc.max_send_message_length", message_limit)])
        supervisor_pb2_grpc.add_SupervisorServicer_to_server(
            SupervisorService(self.host, Authenticator(keys), config.max_archive_mib * MIB), self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
            self.port = self.server.add_secure_port(config.listen, credentials)
        else:
            self.port = self.server.add_insecure_port(config.listen)
        if self.port == 0 and not config.listen.startswith("unix:"):
            raise ConfigError(f"could not listen on {config.listen}")
        self.watcher = DirectoryWatcher(self.host, list(config.packages), config.watch_interval)
        self._loader = threading.Thread(target=self._load_packages, name="restore", daemon=True)
        self.loaded = threading.Event()  # set once restore and the first scan are done

    def start(self) -> None:
        # Health says NOT_SERVING until every stored and watched package has had its
        # load attempted; the API answers meanwhile, showing those as loading.
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.start()
        log.info("listening on %s (%s)", self.config.listen,
                 "API keys required" if self.config.api_keys else "no API keys: loopback only")
        self._loader.start()

    def _load_packages(self) -> None:
        try:
            self.host.restore()
            self.watcher.start()
        finally:
            for service in ("", SERVICE_NAME):
                self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
            self.loaded.set()
            log.info("initial load done: %d package(s) loaded", len(self.host.supervisor.packages()))

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let calls under way finish within `grace`, then stop every sandbox."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.watcher.stop()
        self._loader.join(timeout=grace)
        self.host.close()
        log.info("stopped")
