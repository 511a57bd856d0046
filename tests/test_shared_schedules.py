"""Schedules and runs over a shared registry (real PostgreSQL): one store, leases split, handed over, guarded."""

from __future__ import annotations

import psycopg
import pytest

from cloaca.schedules.model import Outcome, TriggerDefinition
from supervisor.registry.postgres import PostgresRegistry

TRIGGERS = [TriggerDefinition(f"t{number}", "wf", cron="*/5 * * * * *") for number in range(6)]


@pytest.fixture
def members(postgres_url, tmp_path):
    opened: list[PostgresRegistry] = []

    def join() -> PostgresRegistry:
        data = tmp_path / f"m{len(opened)}"
        data.mkdir()
        registry = PostgresRegistry(postgres_url, data, lease_seconds=3)
        opened.append(registry)
        return registry

    yield join
    for registry in opened:
        registry.close()


def expire(url: str, member: str) -> None:
    with psycopg.connect(url) as connection:
        connection.execute("UPDATE supervisors SET expires_at = now() - interval '10 seconds' WHERE id = %s",
                           (member,))
        connection.execute("UPDATE schedule_leases SET expires_at = now() - interval '10 seconds' WHERE holder = %s",
                           (member,))


def test_leases_are_shared_fairly_and_pass_on_when_a_holder_dies(members, postgres_url):
    first, second = members(), members()
    stores = [first.open_schedule_store(), second.open_schedule_store()]
    for store in stores:  # every supervisor loads the package, so both sync it: one set of schedules
        schedules = store.sync_package("acme", "etl", TRIGGERS)
    assert len(schedules) == 6 and len(stores[0].schedules(limit=100)) == 6
    ids = {schedule.id for schedule in schedules}

    held = [set(), set()]
    for _ in range(3):  # renewal rounds, interleaved as heartbeats are
        for index, store in enumerate(stores):
            held[index] = store.renew_leases(ids, set())
    assert len(held[0]) == 3 and len(held[1]) == 3 and held[0] | held[1] == ids
    assert {s.id for s in stores[0].due_candidates()} == held[0]  # a scheduler sees only what it holds

    expire(postgres_url, first.member_id)  # the first stops renewing: its deadline passes
    assert stores[1].renew_leases(ids, set()) == ids
    for store in stores:
        store.close()


def test_a_fire_is_claimed_once_even_by_a_holder_that_lost_its_lease(members):
    first, second = members(), members()
    stores = [first.open_schedule_store(), second.open_schedule_store()]
    [schedule] = stores[0].sync_package("acme", "etl", TRIGGERS[:1])
    following = schedule.next_run_at + 5
    claims = [store.claim_cron_fire(schedule, following) for store in stores]
    assert [claim is not None for claim in claims] == [True, False]
    again = stores[1].sync_package("acme", "etl", TRIGGERS[:1])  # another supervisor loads it meanwhile
    assert again[0].next_run_at == following  # the claimed fire is not put back
    for store in stores:
        store.close()


def test_a_dead_supervisors_runs_and_fires_are_lost_and_no_live_ones_are(members, postgres_url):
    first, second = members(), members()
    runs = [first.open_run_history(), second.open_run_history()]
    mine, theirs = runs[0].started("acme", "etl", "wf"), runs[1].started("acme", "etl", "wf")
    stores = [first.open_schedule_store(), second.open_schedule_store()]
    [schedule] = stores[0].sync_package("acme", "etl", TRIGGERS[:1])
    execution = stores[1].claim_cron_fire(schedule, schedule.next_run_at + 5)
    assert execution is not None

    assert runs[0].recover() == 0 and stores[0].recover() == 0  # both alive: nothing is lost
    expire(postgres_url, second.member_id)
    assert runs[0].recover() == 1 and stores[0].recover() == 1
    assert runs[0].get(theirs).status == "lost" and runs[0].get(mine).status == "running"
    assert stores[0].executions(schedule.id)[0].outcome is Outcome.LOST
    for item in (*runs, *stores):
        item.close()


def test_shared_history_is_bounded_and_records_its_holder(members, postgres_url):
    """The shared store keeps a schedule's newest fires as the embedded one does, each with who ran it."""
    registry = members()
    store = registry.open_schedule_store()
    store.history_kept = 3
    [schedule] = store.sync_package("acme", "etl", TRIGGERS[:1])
    for attempt in range(5):
        store.record_poll(schedule, Outcome.POLL_ERROR, f"attempt {attempt}")
    assert [e.error for e in store.executions(schedule.id)] == ["attempt 4", "attempt 3", "attempt 2"]
    with psycopg.connect(postgres_url) as connection:
        holders = {row[0] for row in connection.execute(
            "SELECT holder FROM schedule_executions WHERE schedule_id = %s", (schedule.id,))}
    assert holders == {registry.member_id}
