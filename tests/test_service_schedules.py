"""Schedules in the service: real packages whose triggers fire in their sandboxes, over real gRPC.

Cron triggers fire every second and poll triggers every 200 ms, so every wait is a
condition with a generous deadline; the restart test kills a real `serve` process.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc
import pytest

from supervisor.api import supervisor_pb2 as pb
from supervisor.client import SupervisorClient
from tests.projects import build
from tests.test_cli_service import Daemon, free_port
from tests.waiting import gone, wait_for, wait_until

DEADLINE = 60.0

SCHEDULED = '''
import time
import cloaca

POLLS = [0]

with cloaca.WorkflowBuilder("report") as builder:
    @cloaca.task(id="write_report")
    def write_report(context):
        context.set("reported", True)
        return context

with cloaca.WorkflowBuilder("ingest") as builder:
    @cloaca.task(id="ingest_file")
    def ingest_file(context):
        if context.get("file") is None and context.get("fired_plain") is None:
            context.set("fired_plain", True)
        context.set("ingested", context.get("file"))
        return context

@cloaca.trigger(on="report", cron="{cron}")
def every_second():
    raise RuntimeError("a cron trigger's body is never called")
{poll}
'''

POLL = '''
@cloaca.trigger(on="ingest", poll_interval="200ms")
def inbox():
    POLLS[0] += 1
    n = POLLS[0]
    if n == 2:
        return cloaca.TriggerResult.fire(cloaca.Context({"file": "a.csv"}))
    if n == 3:
        raise RuntimeError("the inbox is unreachable")
    if n == 4:
        return "not an answer"
    if n == 5:
        return True
    return cloaca.TriggerResult.skip()
'''

# A cron run that lasts longer than the interval between fires.
SLOW = '''
import time
import cloaca

with cloaca.WorkflowBuilder("crunch") as builder:
    @cloaca.task(id="crunch")
    def crunch(context):
        time.sleep(1.5)
        return context

@cloaca.trigger(on="crunch", cron="* * * * * *")
def tick():
    pass
'''

KEYS = {"alpha": "alpha-key-0123456789abcdef", "beta": "beta-key-0123456789abcdef0"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scheduled-packages")
    return {
        "v1": build(root, "scheduled", SCHEDULED.format(cron="* * * * * *", poll=POLL)),
        # The new version drops the poll trigger and changes the cron expression.
        "v2": build(root, "scheduled", SCHEDULED.format(cron="*/2 * * * * *", poll=""), version="2.0.0"),
        "bad-cron": build(root / "bad-cron", "scheduled", SCHEDULED.format(cron="61 * * * * *", poll=""),
                          version="3.0.0"),
        "bad-target": build(root / "bad-target", "stray",
                            "import cloaca\n@cloaca.task(id='t')\ndef t(c):\n    return c\n"
                            "@cloaca.trigger(on='nowhere', poll_interval='1s')\ndef watch():\n    return False\n"),
        "slow": build(root, "slow", SLOW),
    }


def by_trigger(client: SupervisorClient, package: str | None = None) -> dict[str, pb.Schedule]:
    return {schedule.trigger: schedule for schedule in client.schedules(package)}


def outcomes(client: SupervisorClient, schedule_id: str) -> Counter[str]:
    return Counter(run.outcome for run in client.schedule_runs(schedule_id))


def test_cron_and_poll_triggers_fire_in_the_sandbox_and_their_runs_are_recorded(start_server, archives):
    metrics_port = free_port()
    _, address = start_server(metrics_listen=f"127.0.0.1:{metrics_port}")
    with SupervisorClient(address) as client:
        package = client.upload(archives["v1"])
        schedules = by_trigger(client)
        assert set(schedules) == {"every_second", "inbox"}
        cron, poll = schedules["every_second"], schedules["inbox"]
        assert (cron.kind, cron.cron, cron.timezone, cron.workflow) == (pb.Schedule.CRON, "* * * * * *", "UTC",
                                                                        "report")
        assert (poll.kind, poll.poll_interval_ms, poll.workflow) == (pb.Schedule.POLL, 200, "ingest")
        assert cron.enabled and cron.next_fire_at > time.time() - 5 and cron.catchup_policy == "skip"

        fired = wait_for(lambda: [r for r in client.schedule_runs(cron.id) if r.outcome == "completed"][:2]
                         if outcomes(client, cron.id)["completed"] >= 2 else None, DEADLINE, "two cron fires")
        assert all(run.run_id and run.started_at and run.finished_at >= run.started_at for run in fired)
        runs = {run.run_id: run for run in client.runs("scheduled")}
        for run in fired:
            record = runs[run.run_id]
            assert (record.workflow, record.origin, record.status) == ("report", f"schedule:{cron.id}", "completed")

        # The poll answers, in order: skip, fire(ctx), raise, a wrong value, True, then skips.
        wait_until(lambda: outcomes(client, poll.id) == {"completed": 2, "poll_error": 2}, DEADLINE,
                   "two poll fires and two poll errors")
        polled = client.schedule_runs(poll.id)
        errors = sorted(run.error for run in polled if run.outcome == "poll_error")
        assert errors[0].endswith("RuntimeError: the inbox is unreachable")
        assert "must return cloaca.TriggerResult or a bool, not str" in errors[1]
        hashes = {run.context_hash for run in polled if run.outcome == "completed"}
        assert hashlib.sha256(json.dumps({"file": "a.csv"}).encode()).hexdigest() in hashes
        assert hashlib.sha256(b"{}").hexdigest() in hashes  # True fires with an empty context
        ingest = [r for r in client.runs("scheduled") if r.workflow == "ingest"]
        assert len(ingest) == 2 and {r.status for r in ingest} == {"completed"}
        after = client.get("scheduled")
        assert after.pid == package.pid and after.restarts == 0  # poll errors never touched the sandbox

    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).read().decode()
    fires = {frozenset(line.split("{")[1].split("}")[0].split(",")): float(line.rsplit(" ", 1)[1])
             for line in scraped.splitlines() if line.startswith("cloaca_sandbox_schedule_fires_total{")}

    def fired(kind: str, outcome: str) -> float:
        return fires[frozenset({'tenant="default"', f'kind="{kind}"', f'outcome="{outcome}"'})]

    assert fired("cron", "completed") >= 2
    assert fired("trigger", "completed") == 2 and fired("trigger", "poll_error") == 2


def test_pause_resume_replace_and_unload(start_server, archives):
    _, address = start_server()
    with SupervisorClient(address) as client:
        client.upload(archives["v1"])
        schedules = by_trigger(client)
        cron, poll = schedules["every_second"], schedules["inbox"]
        wait_until(lambda: outcomes(client, cron.id)["completed"] >= 1, DEADLINE, "a first cron fire")

        paused = client.pause_schedule(cron.id)
        assert not paused.enabled and paused.next_fire_at == 0
        fires = len(client.schedule_runs(cron.id))
        since = time.time()
        # The poll trigger goes on: once it has polled for 2.5 s more, a running cron would have fired.
        wait_until(lambda: by_trigger(client)["inbox"].last_poll_at > since + 2.5, DEADLINE, "polls after the pause")
        assert len(client.schedule_runs(cron.id)) == fires
        resumed = client.resume_schedule(cron.id)
        assert resumed.enabled and resumed.next_fire_at > since  # from now on: the paused seconds are not made up
        wait_until(lambda: len(client.schedule_runs(cron.id)) > fires, DEADLINE, "a fire after resuming")

        # A new version: the cron trigger kept by name keeps its id and history; the dropped one stops.
        client.upload(archives["v2"])
        [kept] = client.schedules()
        assert (kept.id, kept.trigger, kept.cron) == (cron.id, "every_second", "*/2 * * * * *")
        with pytest.raises(grpc.RpcError) as caught:
            client.schedule_runs(poll.id)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        history = len(client.schedule_runs(cron.id))
        assert history > fires

        client.unload("scheduled")
        assert client.schedules() == []
        client.upload(archives["v1"])  # loaded again: the same schedules, with their history
        again = by_trigger(client)
        assert again["every_second"].id == cron.id and again["inbox"].id == poll.id
        assert len(client.schedule_runs(cron.id)) >= history


def test_schedules_are_the_tenants_own(start_server, archives, tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("".join(f"{tenant} {key}\n" for tenant, key in KEYS.items()))
    _, address = start_server(api_keys=key_file)
    with SupervisorClient(address, KEYS["alpha"]) as alpha, SupervisorClient(address, KEYS["beta"]) as beta:
        alpha.upload(archives["slow"])
        [schedule] = alpha.schedules()
        assert beta.schedules() == []
        for call in (lambda: beta.pause_schedule(schedule.id), lambda: beta.resume_schedule(schedule.id),
                     lambda: beta.schedule_runs(schedule.id)):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert alpha.schedules()[0].enabled  # beta's attempt changed nothing
        assert beta.runs() == []


def test_triggers_that_cannot_be_scheduled_refuse_the_package(start_server, archives):
    _, address = start_server()
    with SupervisorClient(address) as client:
        for archive, message in ((archives["bad-cron"], "cron expression '61 * * * * *' is not valid"),
                                 (archives["bad-target"], "fires workflow 'nowhere', which the package does not")):
            with pytest.raises(grpc.RpcError) as caught:
                client.upload(archive)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "[invalid_trigger]" in caught.value.details() and message in caught.value.details()
        assert client.list() == [] and client.schedules() == []


def test_a_killed_service_neither_loses_nor_repeats_a_fire(tmp_path, archives):
    """SIGKILL while a scheduled run is under way: at the next start that fire is recorded lost (not run
    again), the schedule goes on from its next time, and no fire time is ever taken twice."""
    data_dir = tmp_path / "data"
    daemon = Daemon(data_dir)
    try:
        uploaded = daemon.cli("upload", str(archives["slow"]), "--json")
        assert uploaded.returncode == 0, uploaded.stderr
        listed = daemon.cli("schedules", "--json")
        [schedule] = json.loads(listed.stdout)
        assert (schedule["trigger"], schedule["kind"], schedule["cron"]) == ("tick", "cron", "* * * * * *")
        with SupervisorClient(daemon.address) as client:
            wait_until(lambda: any(r.outcome == "skipped" for r in client.schedule_runs(schedule["id"])), DEADLINE,
                       "a fire skipped while a run holds (no overlap)")
            running = wait_for(lambda: [r for r in client.schedule_runs(schedule["id"]) if r.outcome == "running"],
                               DEADLINE, "a run under way")[0]
        sandboxes = daemon.sandbox_pids()
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        for pid in sandboxes:
            wait_until(lambda: gone(pid), DEADLINE, f"sandbox {pid} to die with its service")
    finally:
        daemon.stop(signal.SIGKILL)

    daemon = Daemon(data_dir)
    try:
        with SupervisorClient(daemon.address) as client:
            assert [s.id for s in client.schedules()] == [schedule["id"]]
            wait_until(lambda: any(r.outcome == "completed" and r.scheduled_at > running.scheduled_at
                                   for r in client.schedule_runs(schedule["id"])), DEADLINE, "a fire after the restart")
        history = json.loads(daemon.cli("schedule-runs", schedule["id"][:8], "--limit", "1000", "--json").stdout)
        killed = next(r for r in history if r["id"] == running.id)
        assert killed["outcome"] == "lost" and "stopped before this run finished" in killed["error"]
        times = [r["scheduled_at"] for r in history]
        assert len(times) == len(set(times)), times
        runs = json.loads(daemon.cli("runs", "--json", "--limit", "1000").stdout)
        lost = next(r for r in runs if r["run_id"] == running.run_id)
        assert lost["status"] == "lost" and lost["origin"] == f"schedule:{schedule['id']}"
    finally:
        assert daemon.stop() == 0
