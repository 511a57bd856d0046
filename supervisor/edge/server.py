"""Assembling the daemon: the grpc.aio server, health, reflection, keys, TLS, quotas, watched dirs.

`SupervisorServer` runs on one event loop (`cloaca-sandbox serve` runs it with
asyncio.run). `start()` returns once it listens; stored and watched packages
load in the background while health answers NOT_SERVING. Health and reflection
(v1 and v1alpha) always answer: they pass no tenant quota. Over a shared
registry (`--registry postgresql://...`) the registry's packages are what is
stored, and supervisor.registry_sync keeps this supervisor in step with the others.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from supervisor.api import supervisor_pb2, supervisor_pb2_grpc
from supervisor.config import MIB
from supervisor.edge.auth import Authenticator, load_api_keys
from supervisor.edge.grpc_service import SupervisorService
from supervisor.edge.quotas import TenantQuotas
from supervisor.edge.redaction import service_redactor
from supervisor.instance_lock import DataDirLock
from supervisor.metrics import ServiceMetrics, Snapshot
from supervisor.registry import Registry, open_registry
from supervisor.registry_sync import RegistrySync
from supervisor.sandboxes.runtime import find_runtime
from supervisor.service_config import ServiceConfig, is_loopback
from supervisor.tenants import PackageHost
from supervisor.watcher import DirectoryWatcher

log = logging.getLogger(__name__)

__all__ = ["ConfigError", "ServiceConfig", "SupervisorServer", "is_loopback"]

SERVICE_NAME = supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


METRICS_SNAPSHOT_TIMEOUT = 5.0  # seconds a scrape waits for the event loop; past that it reports not ready
LAG_SAMPLE_INTERVAL = 0.5


class ConfigError(ValueError):
    pass


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cloaca-sandbox")
    except PackageNotFoundError:
        return "unknown"


def _reflection_v1_handler(servicer: reflection.aio.ReflectionServicer) -> grpc.GenericRpcHandler:
    """Reflection v1: the same messages as v1alpha on the wire, so the v1alpha servicer answers both."""
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": method})


class SupervisorServer:
    """The running service."""

    def __init__(self, config: ServiceConfig) -> None:
        keys = load_api_keys(config.api_keys) if config.api_keys else None
        if keys is None and not is_loopback(config.listen):
            raise ConfigError(f"refusing to listen on {config.listen} without API keys: anyone who can reach it "
                              "could run code. Give --api-keys FILE, or listen on 127.0.0.1")
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if config.network and keys is None:
            raise ConfigError("--network gives sandboxes the host's network, loopback included, where this "
                              "service answers anyone without API keys: a package could call, replace and unload "
                              "every package. Give --api-keys FILE too")
        self.config = config
        self.keys = keys
        self.host: PackageHost | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.loaded = asyncio.Event()  # set once restore and the first scan are done
        self._loader: asyncio.Task[None] | None = None
        self.watcher: DirectoryWatcher | None = None
        self.lock = DataDirLock(config.data_dir)
        self.metrics: ServiceMetrics | None = ServiceMetrics(_version()) if config.metrics_listen else None
        self.metrics_port = 0
        self._lag_sampler: asyncio.Task[None] | None = None
        self._stopping = False
        self.registry: Registry | None = None
        self.sync: RegistrySync | None = None

    async def start(self) -> None:
        """Listen; then load stored and watched packages in the background (health NOT_SERVING until done).

        Raises DataDirInUse when another service holds the data dir, ConfigError when the
        address is taken (naming the process listening there, where it can be known).
        """
        config = self.config
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock.acquire()  # before anything in the data dir is touched
        self.registry = await asyncio.to_thread(open_registry, config.registry_url, config.data_dir, config.listen,
                                                config.lease_seconds)
        log.info("package registry: %s", self.registry.description)
        self.host = PackageHost(config.data_dir, config.supervisor_config(), self.metrics, self.registry)
        message_limit = config.max_context_mib * MIB + MIB  # a context plus the message around it
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", message_limit),
                                               ("grpc.max_send_message_length", message_limit),
                                               ("grpc.so_reuseport", 0)])
        quotas = TenantQuotas(config.tenant_requests, config.tenant_uploads)
        supervisor_pb2_grpc.add_SupervisorServicer_to_server(
            SupervisorService(self.host, Authenticator(self.keys), quotas, config.max_archive_mib * MIB,
                              config.upload_idle_timeout, self.metrics,
                              service_redactor(config.data_dir, config.packages, find_runtime().path_entries)),
            self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME,
                 REFLECTION_V1)
        reflector = reflection.aio.ReflectionServicer(names)
        from grpc_reflection.v1alpha import reflection_pb2_grpc

        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, self.server)
        self.server.add_generic_rpc_handlers((_reflection_v1_handler(reflector),))
        try:
            if config.tls_cert is not None and config.tls_key is not None:
                credentials = grpc.ssl_server_credentials([(config.tls_key.read_bytes(),
                                                            config.tls_cert.read_bytes())])
                self.port = self.server.add_secure_port(config.listen, credentials)
            else:
                self.port = self.server.add_insecure_port(config.listen)
        except RuntimeError:
            raise ConfigError(_unavailable_address(config.listen)) from None
        if self.port == 0 and not config.listen.startswith("unix:"):
            raise ConfigError(_unavailable_address(config.listen))
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.host.start()
        if self.registry.shared:
            from supervisor.registry.postgres import PostgresRegistry

            assert isinstance(self.registry, PostgresRegistry)
            self.sync = RegistrySync(self.host, self.registry, config.reconcile_interval)
        await self._serve_metrics()
        await self.server.start()
        log.info("listening on %s (%s)", config.listen,
                 "API keys required" if config.api_keys else "no API keys: loopback only")
        self.watcher = DirectoryWatcher(self.host, list(config.packages), config.watch_settle)
        self._loader = asyncio.get_running_loop().create_task(self._load_packages())

    async def _serve_metrics(self) -> None:
        if self.metrics is None or self.config.metrics_address is None:
            return
        host, port = self.config.metrics_address
        loop = asyncio.get_running_loop()

        async def snapshot() -> Snapshot:
            assert self.host is not None
            return Snapshot(ready=self.loaded.is_set() and not self._stopping,
                            packages_by_state=self.host.state_counts(), sandboxes=self.host.supervisor.figures())

        self.metrics.read_state_with(
            lambda: asyncio.run_coroutine_threadsafe(snapshot(), loop).result(METRICS_SNAPSHOT_TIMEOUT))
        try:
            self.metrics_port = self.metrics.serve(host, port)
        except OSError as exc:
            raise ConfigError(f"could not serve metrics on {self.config.metrics_listen}: {exc.strerror}") from None
        self._lag_sampler = loop.create_task(self._sample_loop_lag(), name="loop-lag")
        log.info("serving metrics on http://%s/metrics", self.config.metrics_listen)

    async def _sample_loop_lag(self) -> None:
        assert self.metrics is not None
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            await asyncio.sleep(LAG_SAMPLE_INTERVAL)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - asked - LAG_SAMPLE_INTERVAL))

    async def _load_packages(self) -> None:
        assert self.host is not None and self.watcher is not None
        try:
            try:
                if self.sync is not None:
                    self.sync.start()  # changes recorded while this one loads are applied after
                await self.host.restore()
                await self.watcher.start()
            except Exception:  # noqa: BLE001 - the service keeps serving what did load
                log.exception("loading stored and watched packages failed")
            await self.host.start_schedules()  # once packages are loaded: no fire finds its package loading
        finally:
            for service in ("", SERVICE_NAME):
                await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
            self.loaded.set()
            count = len(self.host.supervisor.packages())
            log.info("initial load done: %d package%s loaded", count, "" if count == 1 else "s")

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let calls under way finish within `grace`, then stop every sandbox."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self.host is not None:
            self.host.supervisor.close_logs()  # `logs --follow` streams end now, not after the grace
        if self.server is not None:
            await self.server.stop(grace)
        if self.watcher is not None:
            await self.watcher.stop()
        if self._loader is not None:
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        if self.sync is not None:
            await self.sync.stop()
        if self.host is not None:
            await self.host.close()
        elif self.registry is not None:
            await asyncio.to_thread(self.registry.close)
        if self._lag_sampler is not None:
            self._lag_sampler.cancel()
            await asyncio.gather(self._lag_sampler, return_exceptions=True)
        if self.metrics is not None:
            self.metrics.stop()
        self.lock.release()
        log.info("stopped")


def _unavailable_address(listen: str) -> str:
    """Why `listen` could not be bound: who listens there, when this machine says."""
    if listen.startswith("unix:"):
        return f"could not listen on {listen}: the socket path is in use or not writable"
    port_text = listen.rsplit(":", 1)[-1]
    holder = _listening_pid(int(port_text)) if port_text.isdigit() else None
    if holder is not None:
        return (f"could not listen on {listen}: the address is in use by pid {holder}"
                + (f" ({holder_name})" if (holder_name := _process_name(holder)) else ""))
    return f"could not listen on {listen}: the address is in use or not available on this machine"


def _listening_pid(port: int) -> int | None:
    import psutil

    try:
        connections = psutil.net_connections("inet")
    except (psutil.Error, OSError):
        return None  # not allowed to look: say less
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port \
                and connection.pid:
            return connection.pid
    return None


def _process_name(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline()[:4])
    except (psutil.Error, OSError):
        return ""
