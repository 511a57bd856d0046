"""Schedules: cron expressions and poll triggers that start workflows, in-process or in the service.

    cron.py       the engine's cron expressions (5 fields, or 6 with seconds first) in a timezone
    model.py      Schedule, Execution and their states
    store.py      SQLite: schedules, their history, fires claimed at most once
    scheduler.py  the one scheduler, given a store and whatever runs workflows

Imported on demand (not by `import cloaca`): a sandbox never needs it.
"""
