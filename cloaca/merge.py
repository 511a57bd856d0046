"""How dependency outputs combine into a task's input, as the engine does it.

- `smart_merge` (the executor's, executor/context_builder.rs): arrays are
  concatenated without duplicates, objects merge recursively, anything else
  is "latest wins". A diamond relies on it: two branches that each append to
  a list reach the fan-in task with both appends.
- `overwrite_merge` (the planner's, for deciding trigger rules): plain key
  overwrite, later dependency wins.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from cloaca.rules import json_equal


def merge_values(existing: Any, new: Any) -> Any:
    if isinstance(existing, list) and isinstance(new, list):
        merged = list(existing)
        for item in new:
            if not any(json_equal(item, present) for present in merged):
                merged.append(item)
        return merged
    if isinstance(existing, dict) and isinstance(new, dict):
        merged_object = dict(existing)
        for key, value in new.items():
            merged_object[key] = merge_values(merged_object[key], value) if key in merged_object else value
        return merged_object
    return new


def smart_merge(contexts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for context in contexts:
        for key, value in context.items():
            merged[key] = merge_values(merged[key], value) if key in merged else value
    return merged


def overwrite_merge(contexts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for context in contexts:
        merged.update(context)
    return merged
