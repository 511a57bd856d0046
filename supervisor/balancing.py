"""How a client spreads its calls over several supervisors: gRPC's own round_robin, and retries where safe.

`--server` (or SupervisorClient's `server`) is one address, a comma-separated list,
or any gRPC target:

    127.0.0.1:50051                          one supervisor (a DNS name's every A record, balanced)
    10.0.0.5:50051,10.0.0.6:50051            these, each name resolved once, now
    dns:///supervisors.cloaca.svc:50051      a DNS name with several records, re-resolved as they change
    unix:/run/cloaca-sandbox.sock            one local supervisor

The channel balances calls round-robin over every address that answers: a
supervisor that dies fails only the calls in flight on it, and the next calls go
to the others (gRPC drops an address whose connection failed, and keeps trying it
in the background). The service config also retries the idempotent methods
(listing, describing, reading logs, pausing and resuming schedules) on
UNAVAILABLE, so a read that met a dying supervisor is answered by another.
Calls that run code or change packages (CallTask, RunWorkflow, UploadPackage,
UnloadPackage) are not retried: gRPC retries those only when they never reached a
server.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

SERVICE = "cloaca.sandbox.v1.Supervisor"
IDEMPOTENT_METHODS = ("ListPackages", "GetPackage", "ListTasks", "ReadPackageLog", "ListWorkflowRuns",
                      "ListSchedules", "PauseSchedule", "ResumeSchedule", "ListScheduleRuns")
TARGET_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")

SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": SERVICE, "method": method} for method in IDEMPOTENT_METHODS]
                + [{"service": "grpc.health.v1.Health"}],
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}


def split_addresses(server: str) -> list[str]:
    return [part.strip() for part in server.split(",") if part.strip()]


def check_server(value: str) -> str:
    """One HOST:PORT, several comma-separated, or a gRPC target (dns:///, ipv4:, ipv6:, unix:); ValueError if not."""
    value = value.strip()
    if value.startswith(TARGET_SCHEMES):
        if "," in value and value.startswith(("dns:", "unix")):
            raise ValueError("a dns: or unix: target names one address; list several as HOST:PORT,HOST:PORT")
        return value
    parts = split_addresses(value)
    if not parts:
        raise ValueError("the server address is empty")
    forms = "HOST:PORT (a port from 1 to 65535), several of them comma-separated, dns:///NAME:PORT or unix:PATH"
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            if len(parts) == 1:
                raise ValueError(f"the server address must be {forms}")
            raise ValueError(f"{part!r} is not HOST:PORT; the server address must be {forms}")
    return ",".join(parts)


def channel_target(server: str) -> str:
    """The gRPC target for `server`: a list becomes ipv4:/ipv6: addresses (names resolved now)."""
    parts = split_addresses(server)
    if server.startswith(TARGET_SCHEMES) or len(parts) == 1:
        return server
    resolved = [_resolve(part) for part in parts]
    for family in (4, 6):  # one family for the whole list: IPv4 where every server has it
        chosen = [[address for address in addresses if _family(address) == family] for addresses in resolved]
        if all(chosen):
            return f"ipv{family}:" + ",".join(address for addresses in chosen for address in addresses)
    raise ValueError(f"the servers {server} do not all have an IPv4 address, nor all an IPv6 one; list one family "
                     "(or use a dns:/// name)")


def _family(address: str) -> int:
    return ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]")).version


def _resolve(part: str) -> list[str]:
    host, _, port = part.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        literal = [host]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"the server {host!r} cannot be resolved: {exc.strerror}") from None
        literal = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return [f"[{address}]:{port}" if ":" in address else f"{address}:{port}" for address in literal]


def channel_options(server: str) -> list[tuple[str, Any]]:
    """Round-robin over every address, retries of the idempotent methods; TLS checks the first name given."""
    options: list[tuple[str, Any]] = [("grpc.service_config", json.dumps(SERVICE_CONFIG)),
                                      ("grpc.enable_retries", 1)]
    parts = split_addresses(server)
    if len(parts) > 1 and not server.startswith(TARGET_SCHEMES):
        options.append(("grpc.default_authority", parts[0]))
    return options
