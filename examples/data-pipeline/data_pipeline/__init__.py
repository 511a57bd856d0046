"""The packaging guide's ETL example, made runnable: extract, transform, load."""

import cloaca

from data_pipeline.helpers import clean, fetch_from, write_to

with cloaca.WorkflowBuilder("data_pipeline") as builder:
    builder.description("ETL pipeline for analytics data")

    @cloaca.task(id="extract")
    def extract(context):
        """Read the raw rows from the configured source."""
        source = cloaca.var_or("DATA_SOURCE", "memory://sample")
        context.set("raw_data", fetch_from(source))
        return context

    @cloaca.task(id="transform", dependencies=["extract"])
    def transform(context):
        """Drop incomplete rows and normalise names."""
        raw = context.get("raw_data")
        context.set("clean_data", clean(raw))
        return context

    @cloaca.task(id="load", dependencies=["transform"])
    def load(context):
        """Write the clean rows to the warehouse."""
        dest = cloaca.var_or("WAREHOUSE_URL", "memory://warehouse")
        context.set("loaded", write_to(dest, context.get("clean_data")))
        return context
