"""The service run by an unprivileged user: sandboxes confined with user namespaces instead of their own uids.

The test runs a supervisor as `nobody` (uid 65534) in a child process. Its sandbox
maps uid 1000 inside to nobody outside, so the files it must not reach are owned by
the very uid it runs as: only its namespaces and Landlock keep it from them. It
needs root (to switch to nobody) and an interpreter and checkout that nobody can
reach; where either is missing it is skipped, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ROOT

NOBODY = 65534

SCRIPT = textwrap.dedent('''
    import json, os, sys, tempfile, textwrap
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from supervisor import SupervisorConfig, Supervisor
    from tests.projects import build

    work = Path(tempfile.mkdtemp(prefix="unprivileged-"))
    secret = work / "service-secret"
    secret.write_text("the service user's own file")
    archive = build(work, "intruder", textwrap.dedent("""
        import os, socket
        import cloaca

        def attempt(action):
            try:
                action()
                return "allowed"
            except OSError as exc:
                return f"refused ({exc.strerror})"

        @cloaca.task(id="intrude")
        def intrude(context):
            def connect():
                with socket.create_connection(("127.0.0.1", int(context.get("port"))), timeout=2):
                    pass
            context.set("uid", os.getuid())
            context.set("read_service_file", attempt(lambda: open(context.get("secret")).read()))
            context.set("kill_parent", attempt(lambda: os.kill(os.getppid() or 1, 0) if os.getppid() else
                                              (_ for _ in ()).throw(ProcessLookupError(3, "no such process"))))
            context.set("kill_service", attempt(lambda: os.kill(int(context.get("service_pid")), 0)))
            context.set("loopback", attempt(connect))
            context.set("write_tmp", attempt(lambda: open("/tmp/mine", "w").write("ok")))
            return context
    """))
    listener = __import__("socket").socket()
    listener.bind(("127.0.0.1", 0)); listener.listen()
    try:
        with Supervisor(SupervisorConfig(work_dir=work / "work", memory_limit_mib=None)) as supervisor:
            info = supervisor.load(archive)
            answer = supervisor.call("intruder", "intrude", {"secret": str(secret), "service_pid": os.getpid(),
                                                             "port": listener.getsockname()[1]})
            print(json.dumps({"isolation": info.isolation, "context": answer.context,
                              "error": answer.error and answer.error.message}))
    finally:
        __import__("shutil").rmtree(work, ignore_errors=True)
''')


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory `nobody` can read (pytest's own temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="cloaca-unprivileged-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _reachable_by_others(path: str) -> bool:
    current = os.path.realpath(path)
    while current != "/":
        if not os.stat(current).st_mode & 0o001:
            return False
        current = os.path.dirname(current)
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the service as another, unprivileged user")
def test_an_unprivileged_service_confines_its_sandboxes_with_user_namespaces(shared_dir: Path):
    for path in (sys.executable, str(ROOT), sys.prefix):
        if not _reachable_by_others(path):
            pytest.skip(f"{path} is not reachable by other users, so the service cannot run as nobody here")
    script = shared_dir / "unprivileged.py"
    script.write_text(SCRIPT)
    script.chmod(0o644)
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, str(script), str(ROOT)],
                          capture_output=True, text=True, timeout=180, cwd="/",
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    isolation, context = report["isolation"], report["context"]
    assert report["error"] is None, report
    assert isolation["user"].startswith("on") and isolation["identity"] == "on (user namespace, uid 1000 inside)"
    for layer in ("pid", "mount", "network", "no_new_privs", "landlock", "seccomp"):
        assert isolation[layer].startswith("on"), (layer, isolation)
    assert context["uid"] == 1000  # nobody outside, uid 1000 inside its own user namespace
    # The service user's own file, the service's process, the host's loopback: all out of reach.
    assert context["read_service_file"].startswith("refused"), context
    assert context["kill_service"].startswith("refused"), context
    assert context["loopback"].startswith("refused"), context
    assert context["write_tmp"] == "allowed"  # its own scratch
