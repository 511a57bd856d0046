"""Sum orders per region and render the report with the vendored tabulate.

Shows an async task, a trigger rule, retries, and a library the host lacks.
"""

import asyncio

import cloaca
from tabulate import tabulate

SAMPLE_ORDERS = [
    {"region": "north", "amount": 120.0},
    {"region": "south", "amount": 80.5},
    {"region": "north", "amount": 42.25},
    {"region": "west", "amount": 1500.0},
]

with cloaca.WorkflowBuilder("sales_report") as builder:
    builder.description("Regional sales totals as a text table")

    @cloaca.task(id="load_orders")
    def load_orders(context):
        """Use the orders given in the context, or the built-in sample."""
        if "orders" not in context:
            context.set("orders", SAMPLE_ORDERS)
        return context

    @cloaca.task(id="summarize", dependencies=["load_orders"])
    async def summarize(context):
        """Total the amounts per region."""
        await asyncio.sleep(0)  # stands in for an async data source
        totals = {}
        for order in context.get("orders"):
            totals[order["region"]] = round(totals.get(order["region"], 0.0) + float(order["amount"]), 2)
        context.set("totals", dict(sorted(totals.items())))
        return context

    @cloaca.task(
        id="flag_large",
        dependencies=["summarize"],
        trigger_rules=cloaca.context_value("large_threshold", "Exists", None),
    )
    def flag_large(context):
        """Only when a threshold is given: list the regions above it."""
        threshold = float(context.get("large_threshold"))
        context.set("large_regions", [r for r, total in context.get("totals").items() if total > threshold])
        return context

    @cloaca.task(id="render", dependencies=["summarize", "flag_large"], retry_attempts=3, retry_delay_ms=10)
    def render(context):
        """Render the totals as a table (flag_large may have been skipped: its output is then absent)."""
        rows = [(region, total) for region, total in context.get("totals").items()]
        context.set("report", tabulate(rows, headers=["region", "total"], tablefmt="github", floatfmt=".2f"))
        return context
