"""Schedules: cron expressions and poll triggers that start workflows, in-process or in the service.

    cron.py       the engine's cron expressions (5 fields, or 6 with seconds first) in a timezone
    model.py      Schedule, Execution and their states
    store.py      SQLite: schedules, their history, fires claimed at most once
    scheduler.py  the one scheduler, given a store and whatever runs workflows
    local.py      DefaultRunner's: the scheduler on a thread, running workflows in this process
                  (the service's is supervisor/scheduling.py, running them in sandboxes)

Imported on demand (not by `import cloaca`): a sandbox never needs it.
"""
