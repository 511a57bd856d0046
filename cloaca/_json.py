"""Checks that a value can travel as JSON, naming where it cannot."""

from __future__ import annotations

import math
from typing import Any


class NotJSONError(TypeError):
    """A context value that JSON cannot represent."""

    def __init__(self, key: str, path: str, value: Any) -> None:
        self.key = key
        self.path = path
        self.type_name = type(value).__qualname__
        where = f"key {key!r}" if path == key else f"key {key!r} (at {path})"
        super().__init__(
            f"context value for {where} is not JSON-representable: "
            f"{self.type_name} {_short_repr(value)}"
        )


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_json_value(key: str, value: Any) -> None:
    """Raise NotJSONError unless `value` is made only of JSON types.

    Stricter than json.dumps on purpose: tuples, NaN and non-string keys
    would silently change on the way through, so they are refused here.
    """
    _check(key, key, value)


def _check(key: str, path: str, value: Any) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise NotJSONError(key, path, value)
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(key, f"{path}[{index}]", item)
        return
    if isinstance(value, dict):
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise NotJSONError(key, f"{path} key {item_key!r}", item_key)
            _check(key, f"{path}.{item_key}", item)
        return
    raise NotJSONError(key, path, value)


def check_json_object(data: Any) -> dict[str, Any]:
    """Check a whole context mapping; returns it typed as a dict."""
    if not isinstance(data, dict):
        raise TypeError(f"a context must be a JSON object, not {type(data).__qualname__}")
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"context keys must be strings, not {type(key).__qualname__} {key!r}")
        check_json_value(key, value)
    return data
