"""A workflow written for the Cloacina engine, unchanged: bare module-level tasks.

The loader registers them under the package's workflow_name ("visits_report").
It shows a fan-out/fan-in (the two fetches' lists reach `merge` concatenated),
a workflow param with a default, a retry policy object, a trigger rule on
another task's outcome, and callbacks.
"""

import sys

import cloaca

from visits_report.sources import fetch


def log_failure(task_id, error, context):
    print(f"[visits_report] {task_id} failed: {error}", file=sys.stderr)


@cloaca.task(id="fetch_web", retry=cloaca.RetryPolicy.builder().max_attempts(3).initial_delay(0.05).build(),
             on_failure=log_failure)
def fetch_web(context):
    """Visits from the web analytics source."""
    context.set("rows", [dict(row, source="web") for row in fetch("web")])
    return context


@cloaca.task(id="fetch_mobile", retry_attempts=3, retry_delay_ms=50, on_failure=log_failure)
def fetch_mobile(context):
    """Visits from the mobile app's source."""
    context.set("rows", [dict(row, source="mobile") for row in fetch("mobile")])
    return context


@cloaca.workflow_params(busy_threshold=(int, 100))
@cloaca.task(id="merge", dependencies=[fetch_web, fetch_mobile])
def merge(context):
    """Both fetches' rows arrive merged (arrays concatenate); total them per page."""
    totals = {}
    for row in context.get("rows"):
        totals[row["page"]] = totals.get(row["page"], 0) + row["visits"]
    context.set("totals", dict(sorted(totals.items())))
    context.set("busy", [page for page, total in totals.items() if total >= context.get("busy_threshold")])
    return context


@cloaca.task(id="alert", dependencies=["merge"],
             trigger_rules=cloaca.context_value("busy", "!=", []))
def alert(context):
    """Only when some page is busy."""
    context.set("alert", f"busy pages: {', '.join(context.get('busy'))}")
    return context


@cloaca.task(id="summarise", dependencies=["merge", "alert"],
             on_success=lambda task_id, context: print(f"[visits_report] {task_id} ok", file=sys.stderr))
def summarise(context):
    """Runs whether or not the alert did (a skipped task has no output)."""
    totals = context.get("totals")
    context.set("summary", f"{sum(totals.values())} visits on {len(totals)} pages")
    return context
