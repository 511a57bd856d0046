"""What an operator expects of the service they run (issue 10): one service per data dir and port."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.instance_lock import DataDirInUse, DataDirLock
from tests.conftest import ROOT
from tests.test_cli_service import Daemon, free_port


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


@pytest.fixture
def daemon(tmp_path: Path):
    started = Daemon(tmp_path / "data")
    yield started
    started.stop(signal.SIGKILL)


def test_a_second_service_on_the_same_data_dir_exits_at_once_naming_the_holder(daemon, tmp_path):
    second = serve("--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(tmp_path / "data"))
    assert second.returncode == 2, second.stderr
    assert f"pid {daemon.process.pid}" in second.stderr and "in use" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.process.poll() is None  # the first one serves on
    assert daemon.cli("list").returncode == 0


def test_a_second_service_on_the_same_port_exits_at_once_naming_the_address(daemon, tmp_path):
    second = serve("--listen", daemon.address, "--data-dir", str(tmp_path / "other-data"))
    assert second.returncode == 2, second.stderr
    assert f"could not listen on {daemon.address}: the address is in use by pid {daemon.process.pid}" \
        in second.stderr
    assert "Traceback" not in second.stderr
    # Its own data dir is free again: a service started there later runs.
    lock = DataDirLock(tmp_path / "other-data")
    lock.acquire()
    lock.release()


def test_the_lock_excludes_within_one_process_and_is_released(tmp_path):
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUse, match=r"pid \d+"):
            DataDirLock(tmp_path).acquire()
    with DataDirLock(tmp_path) as again:
        assert again.held
