"""Turning a Python value into the JSON data a context holds, naming what cannot be.

The engine converts values with `pythonize`: tuples become lists, string-keyed
mappings become objects, and anything else JSON cannot carry is a TypeError.
`to_json_value` does the same and always returns a fresh copy, so a value
stored in a context never shares state with the object it came from.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class NotJSONError(TypeError):
    """A context value that JSON cannot represent (the engine raises TypeError too)."""

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


def to_json_value(key: str, value: Any) -> Any:
    """A fresh copy of `value` made only of JSON types, or NotJSONError.

    Tuples become lists and mappings become dicts (as the engine converts
    them). NaN and infinities are refused: JSON has no spelling for them.
    """
    return _convert(key, key, value)


def _convert(key: str, path: str, value: Any) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, even from a str subclass
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        raise NotJSONError(key, path, value)
    if isinstance(value, (list, tuple)):
        return [_convert(key, f"{path}[{index}]", item) for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        converted = {}
        for item_key, item in value.items():
            if not isinstance(item_key, str):
                raise NotJSONError(key, f"{path} key {item_key!r}", item_key)
            converted[str.__str__(item_key)] = _convert(key, f"{path}.{item_key}", item)
        return converted
    raise NotJSONError(key, path, value)


def to_json_object(data: Any) -> dict[str, Any]:
    """A whole context mapping as a fresh JSON object; TypeError if it is not one."""
    if not isinstance(data, Mapping):
        raise TypeError(f"a context must be a JSON object, not {type(data).__qualname__}")
    converted = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"context keys must be strings, not {type(key).__qualname__} {key!r}")
        converted[key] = to_json_value(key, value)
    return converted


def check_json_object(data: Any) -> dict[str, Any]:
    """Check a whole context mapping; returns a converted copy typed as a dict."""
    return to_json_object(data)
