"""How late schedules fire in the service, against how late a bare timer wakes on this machine.

A package with a cron trigger firing every second and a poll trigger every 200 ms
runs in `cloaca-sandbox serve`. For each cron fire, lateness is its run's start
minus the second it was due; for the poll trigger (which fires at every poll), the
gap between consecutive polls minus the 200 ms asked for. The floor, measured in the same run while the
service runs beside it: an asyncio loop in this process sleeping until each whole
second (the lateness of a bare event-loop timer, with none of our code).

Run: python benchmarks/schedule_lateness.py [--fires N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from common import Summary
from daemon import daemon

SOURCE = '''
import cloaca

with cloaca.WorkflowBuilder("tick") as builder:
    @cloaca.task(id="tick")
    def tick(context):
        return context

@cloaca.trigger(on="tick", cron="* * * * * *")
def every_second():
    pass

@cloaca.trigger(on="tick", poll_interval="200ms")
def poll():
    return True
'''


async def timer_lateness(fires: int) -> list[float]:
    samples = []
    for _ in range(fires):
        due = float(int(time.time()) + 1)
        await asyncio.sleep(due - time.time())
        samples.append(time.time() - due)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=20, help="cron fires to time (one a second)")
    args = parser.parse_args()
    from supervisor.client import SupervisorClient
    from tests.projects import build

    scratch = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    try:
        archive = build(scratch, "ticker", SOURCE)
        with daemon(scratch / "data") as (address, _), SupervisorClient(address) as client:
            client.upload(archive)
            schedules = {s.trigger: s for s in client.schedules()}
            floor = asyncio.run(timer_lateness(args.fires))  # the service fires beside it meanwhile
            deadline = time.monotonic() + args.fires * 3 + 30
            while True:
                fired = [r for r in client.schedule_runs(schedules["every_second"].id, limit=1000)
                         if r.outcome == "completed"]
                if len(fired) >= args.fires or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            polls = sorted(r.scheduled_at for r in client.schedule_runs(schedules["poll"].id, limit=1000))
        late = Summary([r.started_at - r.scheduled_at for r in fired])
        base = Summary(floor)
        print(f"cron fires ({len(fired)}), due -> run started:  {late.ms()}")
        print(f"bare asyncio timer ({len(floor)}), due -> woke:   {base.ms()}")
        print(f"ratio (median): {late.median / base.median:5.1f}x   (the scheduler claims the fire in SQLite, then "
              "starts the run)")
        gaps = Summary([after - before - 0.2 for before, after in zip(polls, polls[1:])])
        print(f"poll trigger ({len(polls)} polls), gap - 200 ms:   {gaps.ms()}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
