"""The service's Prometheus metrics, served over HTTP on `--metrics-listen HOST:PORT` (GET /metrics).

Each layer reports what it alone knows: the core its calls, refusals and
sandbox lifecycle events (through supervisor.observing), the package host its
loads, the edge its tenants' requests, quota refusals and uploads. What is a
state rather than an event (calls running and waiting, memory, packages by
state, readiness) is read when Prometheus scrapes, from a snapshot the
service's event loop takes (`Snapshot`), never from another thread's view.

Label cardinality is bounded: `tenant` comes from the API key file (or is
`default`); `package` and `task` exist only for loaded packages, their series
made at load and removed at unload, and a package's tasks beyond
MAX_TASK_SERIES share `task="_other"`; `outcome`, `cause`, `reason`, `code`,
`method`, `source` and `kind` take values from fixed sets (anything a sandbox
reports outside them is `other`). A request naming a package or task that does
not exist is counted by tenant, method and code only.

The call path stays cheap: a loaded package's label children are made once,
at load, so a call costs two dictionary look-ups and two locked updates
(a counter and a histogram), and no allocation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from cloaca.errors import CRASHED, EXCEPTION, MEMORY_LIMIT, TIMEOUT, UNAVAILABLE
from supervisor.observing import SandboxFigures
from supervisor.results import CallResult
from supervisor.sandboxes.events import Cause, EventKind, SandboxEvent

PREFIX = "cloaca_sandbox"
COMPLETED = "completed"
OTHER = "other"
OUTCOMES = (COMPLETED, EXCEPTION, TIMEOUT, MEMORY_LIMIT, CRASHED, UNAVAILABLE, OTHER)
REFUSALS = ("resource_exhausted", "unavailable", "invalid_argument", "not_found", OTHER)
CAUSES = tuple(cause.value for cause in Cause) + (OTHER,)
SCHEDULE_KINDS = ("cron", "trigger")
SCHEDULE_OUTCOMES = ("completed", "failed", "skipped", "poll_error")
MAX_TASK_SERIES = 100
OTHER_TASK = "_other"
CALL_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120)
LAG_BUCKETS = (.001, .005, .01, .025, .05, .1, .25, .5, 1, 5)
SNAPSHOT_TIMEOUT = 5.0  # seconds a scrape waits for the event loop's snapshot


@dataclass(frozen=True)
class Snapshot:
    """The state a scrape reports, taken on the service's event loop."""

    ready: bool
    packages_by_state: dict[str, int] = field(default_factory=dict)
    sandboxes: list[SandboxFigures] = field(default_factory=list)


class _PackageSeries:
    """One loaded package's label children, made once at load."""

    def __init__(self, metrics: "ServiceMetrics", tenant: str, name: str, tasks: list[str]) -> None:
        self.labels = (tenant, name)
        own = tasks[:MAX_TASK_SERIES]
        shared = [OTHER_TASK] if len(tasks) > MAX_TASK_SERIES else []
        self.task_label = {task: task for task in own} | {task: OTHER_TASK for task in tasks[MAX_TASK_SERIES:]}
        self.calls = {task: {outcome: metrics.calls.labels(tenant, name, task, outcome) for outcome in OUTCOMES}
                      for task in own + shared}
        self.latency = {task: metrics.call_seconds.labels(tenant, name, task) for task in own + shared}
        self.tasks = own + shared

    def remove(self, metrics: "ServiceMetrics") -> None:
        tenant, name = self.labels
        for task in self.tasks:
            for outcome in OUTCOMES:
                _forget(metrics.calls, tenant, name, task, outcome)
            _forget(metrics.call_seconds, tenant, name, task)
        for reason in REFUSALS:
            _forget(metrics.calls_refused, tenant, name, reason)
        for cause in CAUSES:
            _forget(metrics.restarts, tenant, name, cause)
        for outcome in ("ok", "failed"):
            _forget(metrics.sandbox_starts, tenant, name, outcome)


def _forget(metric: Counter | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


class ServiceMetrics:
    """Every metric of one service, in its own registry (two services in one process do not mix)."""

    def __init__(self, version: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        r = self.registry
        p = PREFIX
        self.calls = Counter(f"{p}_calls", "Task calls answered, by outcome: completed or the error's kind",
                             ["tenant", "package", "task", "outcome"], registry=r)
        self.call_seconds = Histogram(f"{p}_call_duration_seconds", "Task call latency, admission to answer",
                                      ["tenant", "package", "task"], buckets=CALL_BUCKETS, registry=r)
        self.calls_refused = Counter(f"{p}_calls_refused", "Calls refused by a loaded package's sandbox before "
                                     "running (resource_exhausted: its queue was full)",
                                     ["tenant", "package", "reason"], registry=r)
        self.sandbox_starts = Counter(f"{p}_sandbox_starts", "Sandbox incarnations started, and starts that failed",
                                      ["tenant", "package", "outcome"], registry=r)
        self.sandbox_start_seconds = Histogram(f"{p}_sandbox_start_duration_seconds",
                                               "From launch to a sandbox ready for calls", buckets=LOAD_BUCKETS,
                                               registry=r)
        self.restarts = Counter(f"{p}_sandbox_restarts", "Sandbox restarts, by cause",
                                ["tenant", "package", "cause"], registry=r)
        self.loads = Counter(f"{p}_package_loads", "Package loads, by source (upload, watched, restore) and "
                             "outcome (ok, or the loader's error code)", ["tenant", "source", "outcome"], registry=r)
        self.load_seconds = Histogram(f"{p}_package_load_duration_seconds", "Package loads, archive to ready sandbox",
                                      ["source"], buckets=LOAD_BUCKETS, registry=r)
        self.uploads = Counter(f"{p}_uploads", "UploadPackage requests, by gRPC status code",
                               ["tenant", "code"], registry=r)
        self.upload_seconds = Histogram(f"{p}_upload_duration_seconds", "UploadPackage, first byte to answer",
                                        buckets=LOAD_BUCKETS, registry=r)
        self.requests = Counter(f"{p}_requests", "Public API requests, by tenant, method and gRPC status code",
                                ["tenant", "method", "code"], registry=r)
        self.quota_refusals = Counter(f"{p}_quota_refusals", "Requests refused by their tenant's quota",
                                      ["tenant", "kind"], registry=r)
        self.unauthenticated = Counter(f"{p}_unauthenticated_requests", "Requests without a valid API key",
                                       registry=r)
        self.schedule_fires = Counter(f"{p}_schedule_fires", "Schedule fires and polls that did something, by "
                                      "tenant, kind (cron, trigger) and outcome (completed, failed, skipped, "
                                      "poll_error)", ["tenant", "kind", "outcome"], registry=r)
        self.loop_lag = Histogram(f"{p}_event_loop_lag_seconds", "How late the service's event loop runs a "
                                  "timer: a busy or blocked loop delays every call", buckets=LAG_BUCKETS, registry=r)
        info = Gauge(f"{p}_build_info", "The service's version", ["version"], registry=r)
        info.labels(version).set(1)
        Gauge(f"{p}_start_time_seconds", "When the service started, seconds since the epoch",
              registry=r).set(time.time())
        self._packages: dict[str, _PackageSeries] = {}
        self._requests: dict[str, dict[str, dict[str, Counter]]] = {}  # tenant -> method -> code -> child
        self._state = _StateCollector()
        self.registry.register(self._state)
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    # --- the core (supervisor.observing.SupervisorObserver) ---------------------------

    def package_loaded(self, key: str, tenant: str | None, name: str, tasks: list[str]) -> None:
        previous = self._packages.get(key)
        if previous is not None and previous.tasks == tasks:
            return  # a new version with the same tasks keeps its series
        if previous is not None:
            previous.remove(self)
        self._packages[key] = _PackageSeries(self, tenant or "", name, tasks)

    def package_unloaded(self, key: str) -> None:
        series = self._packages.pop(key, None)
        if series is not None:
            series.remove(self)

    def call_finished(self, key: str, task: str, result: CallResult) -> None:
        series = self._packages.get(key)
        if series is None:
            return
        task = series.task_label.get(task, OTHER_TASK)
        outcomes = series.calls[task]
        error = result.error
        (outcomes[COMPLETED] if error is None else outcomes.get(error.kind) or outcomes[OTHER]).inc()
        series.latency[task].observe(result.duration_ms / 1000.0)

    def call_refused(self, key: str, code: str) -> None:
        series = self._packages.get(key)
        if series is not None:
            self.calls_refused.labels(*series.labels, code if code in REFUSALS else OTHER).inc()

    def sandbox_event(self, event: SandboxEvent) -> None:
        tenant, name = event.tenant or "", event.package.rpartition("/")[2]
        if event.kind is EventKind.STARTED:
            self.sandbox_starts.labels(tenant, name, "ok").inc()
            self.sandbox_start_seconds.observe(event.seconds)
        elif event.kind is EventKind.START_FAILED:
            self.sandbox_starts.labels(tenant, name, "failed").inc()
        elif event.kind is EventKind.RESTARTING:
            self.restarts.labels(tenant, name, event.cause if event.cause in CAUSES else OTHER).inc()

    # --- the package host -----------------------------------------------------------

    def load_finished(self, tenant: str, source: str, outcome: str, seconds: float) -> None:
        self.loads.labels(tenant, source, outcome).inc()
        self.load_seconds.labels(source).observe(seconds)

    # --- the edge -------------------------------------------------------------------

    def request_finished(self, tenant: str, method: str, code: str) -> None:
        by_method = self._requests.get(tenant)
        if by_method is None:
            by_method = self._requests[tenant] = {}
        by_code = by_method.get(method)
        if by_code is None:
            by_code = by_method[method] = {}
        child = by_code.get(code)
        if child is None:
            child = by_code[code] = self.requests.labels(tenant, method, code)
        child.inc()

    def schedule_fired(self, tenant: str, kind: str, outcome: str) -> None:
        self.schedule_fires.labels(tenant, kind if kind in SCHEDULE_KINDS else OTHER,
                                   outcome if outcome in SCHEDULE_OUTCOMES else OTHER).inc()

    def quota_refused(self, tenant: str, kind: str) -> None:
        self.quota_refusals.labels(tenant, kind).inc()

    def unauthenticated_request(self) -> None:
        self.unauthenticated.inc()

    def upload_finished(self, tenant: str, code: str, seconds: float) -> None:
        self.uploads.labels(tenant, code).inc()
        self.upload_seconds.observe(seconds)

    # --- serving --------------------------------------------------------------------

    def read_state_with(self, snapshot: Callable[[], Snapshot]) -> None:
        """How a scrape gets the service's state (a call that runs on the service's loop)."""
        self._state.snapshot = snapshot

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on a thread of its own; returns the port (useful when `port` is 0)."""
        server, thread = start_http_server(port, host, registry=self.registry)
        self._http = (server, thread)
        return server.server_address[1]

    def stop(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(10)
            self._http = None


class _StateCollector(Collector):
    """Gauges read at scrape time from a snapshot of the service's state."""

    def __init__(self) -> None:
        self.snapshot: Callable[[], Snapshot] | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(Snapshot(ready=False)))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if self.snapshot is None:
            return []
        try:
            snapshot = self.snapshot()
        except Exception:  # noqa: BLE001 - the loop did not answer in time, or is gone: report not ready
            snapshot = Snapshot(ready=False)
        return list(self._families(snapshot))

    @staticmethod
    def _families(snapshot: Snapshot) -> Iterable[GaugeMetricFamily]:
        ready = GaugeMetricFamily(f"{PREFIX}_ready", "1 while the service serves: stored and watched packages "
                                  "loaded, not shutting down, and its event loop answering")
        ready.add_metric([], 1.0 if snapshot.ready else 0.0)
        yield ready
        packages = GaugeMetricFamily(f"{PREFIX}_packages", "Packages by state (loading, ready, failed)",
                                     labels=["state"])
        for state in ("loading", "ready", "failed"):
            packages.add_metric([state], snapshot.packages_by_state.get(state, 0))
        yield packages
        running = GaugeMetricFamily(f"{PREFIX}_calls_running", "Calls a sandbox is running",
                                    labels=["tenant", "package"])
        waiting = GaugeMetricFamily(f"{PREFIX}_calls_waiting", "Calls admitted and waiting for a sandbox slot "
                                    "(the queue)", labels=["tenant", "package"])
        memory = GaugeMetricFamily(f"{PREFIX}_sandbox_memory_bytes", "A sandbox's own memory, last sampled "
                                   "(its cgroup's usage, or its processes' USS)", labels=["tenant", "package"])
        limit = GaugeMetricFamily(f"{PREFIX}_sandbox_memory_limit_bytes", "A sandbox's memory limit (0: none)",
                                  labels=["tenant", "package"])
        for figures in snapshot.sandboxes:
            labels = [figures.tenant, figures.package]
            running.add_metric(labels, figures.running)
            waiting.add_metric(labels, figures.waiting)
            memory.add_metric(labels, figures.memory_bytes)
            limit.add_metric(labels, figures.memory_limit_bytes)
        yield from (running, waiting, memory, limit)
