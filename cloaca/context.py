"""`cloaca.Context`: the JSON key/value map that flows between tasks."""

from __future__ import annotations

import copy
import json
from typing import Any, Iterator, Mapping

from cloaca._json import check_json_object, check_json_value


class ContextKeyError(KeyError):
    """insert() on a key that exists, or update()/remove() on one that does not."""

    def __str__(self) -> str:  # KeyError's default str() quotes the whole message
        return str(self.args[0])


class Context:
    """A mapping of string keys to JSON values, checked as values are stored.

    Storing a value JSON cannot carry (a set, a datetime, NaN...) fails on
    that line, naming the key and the type, rather than when the context
    later leaves the task.
    """

    __slots__ = ("_data",)

    def __init__(self, dict: Mapping[str, Any] | None = None) -> None:  # noqa: A002 - seeds' keyword
        data = {} if dict is None else {**dict}
        check_json_object(data)
        self._data: dict[str, Any] = data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Insert or update `key`."""
        check_json_value(key, value)
        self._data[key] = value

    def insert(self, key: str, value: Any) -> None:
        """Add a new key; fails if it exists."""
        if key in self._data:
            raise ContextKeyError(f"context key {key!r} already exists; use update() or set()")
        check_json_value(key, value)
        self._data[key] = value

    def update(self, key: str, value: Any) -> None:
        """Replace the value of an existing key; fails if it is missing."""
        if key not in self._data:
            raise ContextKeyError(f"context key {key!r} does not exist; use insert() or set()")
        check_json_value(key, value)
        self._data[key] = value

    def remove(self, key: str) -> Any:
        """Delete `key` and return its value; fails if it is missing."""
        if key not in self._data:
            raise ContextKeyError(f"context key {key!r} does not exist")
        return self._data.pop(key)

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the data, safe to keep after the task changes the context."""
        return copy.deepcopy(self._data)

    def to_json(self) -> str:
        return json.dumps(self._data)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Context":
        return cls(json.loads(text))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.remove(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def keys(self) -> list[str]:
        return list(self._data)

    def items(self) -> list[tuple[str, Any]]:
        return list(self._data.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Context):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Context({self._data!r})"

