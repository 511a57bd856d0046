"""Client-side balancing: the --server forms, their errors, and the service config the channel uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from supervisor.api import supervisor_pb2
from supervisor.balancing import IDEMPOTENT_METHODS, SERVICE, SERVICE_CONFIG, channel_target, check_server
from tests.conftest import ROOT


@pytest.mark.parametrize("given, target", [
    ("127.0.0.1:50051", "127.0.0.1:50051"),
    ("127.0.0.1:1, 127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
    ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
    ("dns:///supervisors.cloaca.svc:50051", "dns:///supervisors.cloaca.svc:50051"),
    ("unix:/run/cloaca.sock", "unix:/run/cloaca.sock"),
])
def test_server_forms(given, target):
    assert channel_target(check_server(given)) == target


@pytest.mark.parametrize("given, message", [
    ("127.0.0.1:1,nope", "'nope' is not HOST:PORT"),
    ("127.0.0.1:0", "must be HOST:PORT"),
    ("", "empty"),
    ("dns:///a:1,dns:///b:2", "names one address"),
])
def test_bad_servers_are_refused_in_one_line(given, message):
    with pytest.raises(ValueError, match=message):
        check_server(given)
    ran = subprocess.run([sys.executable, "-m", "supervisor.cli", "list", "--server", given], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, env=os.environ)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_an_unresolvable_name_in_a_list_is_one_line():
    ran = subprocess.run([sys.executable, "-m", "supervisor.cli", "list", "--server",
                          "127.0.0.1:1,no-such-host.invalid:2"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=os.environ)
    assert ran.returncode == 2 and "cannot be resolved" in ran.stderr and "Traceback" not in ran.stderr


def test_the_service_config_balances_round_robin_and_retries_only_idempotent_methods():
    config = json.loads(json.dumps(SERVICE_CONFIG))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    methods = supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"].methods_by_name
    assert SERVICE == supervisor_pb2.DESCRIPTOR.services_by_name["Supervisor"].full_name
    assert set(IDEMPOTENT_METHODS) <= set(methods)
    assert not {"CallTask", "RunWorkflow", "UploadPackage", "UnloadPackage"} & set(IDEMPOTENT_METHODS)
    [policy] = config["methodConfig"]
    assert policy["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
