"""`cloaca.Context`: the JSON key/value map that flows between tasks.

It behaves as the engine's does (a map of JSON values behind an API, not a
dict): `get` returns a copy, so `d = ctx.get("k"); d["x"] = 1` changes nothing
until `ctx.set("k", d)`; `insert` refuses an existing key with ValueError,
`update` a missing one with KeyError; `remove` of a missing key returns None;
`ctx[key]` raises KeyError for a missing key and for one holding null.

Beyond the engine (nothing engine code can notice): iteration, `keys()`,
`items()` and `==`. Values are checked as they are stored: one JSON cannot
carry fails on that line, naming the key (`NotJSONError`, a TypeError).

Inside a sandbox a task's context is made from the call's JSON bytes, already
checked by the runtime, and decoded only when the task first looks inside it;
a task that hands it on unchanged never pays for decoding it
(`unchanged_json`), which is what makes large contexts cheap to pass along.
"""

from __future__ import annotations

import gc
import json
from typing import Any, Iterator, Mapping

import orjson

from cloaca import secrets
from cloaca._json import to_json_object, to_json_value

_COMPACT = (",", ":")  # serde_json's form: {"a":1}
_GC_FREE_DECODE_BYTES = 256 * 1024


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"context keys are strings, not {type(key).__qualname__} {key!r}")
    return key


class Context:
    __slots__ = ("_decoded", "_raw", "_changed")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._decoded: dict[str, Any] | None = {} if data is None else to_json_object(data)
        self._raw: bytes | None = None  # the JSON it was made from, when it was made from JSON
        self._changed = False

    @classmethod
    def _from_checked_json(cls, raw: bytes) -> "Context":
        """A context over a JSON object the runtime has already checked; decoded on first use."""
        context = cls.__new__(cls)
        context._decoded = None
        context._raw = raw
        context._changed = False
        return context

    @property
    def _data(self) -> dict[str, Any]:
        if self._decoded is None:
            assert self._raw is not None
            # Checked JSON: nothing to convert. The cyclic GC is held off while a large one is decoded:
            # it would otherwise run again and again over the containers it creates.
            paused = len(self._raw) >= _GC_FREE_DECODE_BYTES and gc.isenabled()
            if paused:
                gc.disable()
            try:
                self._decoded = orjson.loads(self._raw)
            finally:
                if paused:
                    gc.enable()
        return self._decoded

    def _changing(self) -> dict[str, Any]:
        self._changed = True
        return self._data

    def unchanged_json(self) -> bytes | None:
        """The JSON bytes this context was made from, as long as nothing has changed it."""
        return None if self._changed else self._raw

    def get(self, key: str, default: Any = None) -> Any:
        """A copy of the value, or `default` when the key is absent (a stored null is None)."""
        if key in self._data:
            return to_json_value(key, self._data[key])
        return default

    def set(self, key: str, value: Any) -> None:
        """Insert or update `key`."""
        self._changing()[_check_key(key)] = to_json_value(key, value)

    def insert(self, key: str, value: Any) -> None:
        """Add a new key; ValueError if it exists."""
        if _check_key(key) in self._data:
            raise ValueError(f"Key already exists: Key already exists: {key}")
        self._changing()[key] = to_json_value(key, value)

    def update(self, key: str, value: Any) -> None:
        """Replace the value of an existing key; KeyError if it is missing."""
        if _check_key(key) not in self._data:
            raise KeyError(f"Key not found: Key not found: {key}")
        self._changing()[key] = to_json_value(key, value)

    def remove(self, key: str) -> Any:
        """Delete `key` and return its value, or None when it was not there."""
        if key not in self._data:
            return None
        return self._changing().pop(key)

    def update_from_dict(self, data: Mapping[str, Any]) -> None:
        """Set every key of `data` (insert or update)."""
        self._changing().update(to_json_object(data))

    def to_dict(self) -> dict[str, Any]:
        """A fresh copy of the data."""
        return to_json_object(self._data)

    def to_json(self) -> str:
        return json.dumps(self._data, separators=_COMPACT, ensure_ascii=False, allow_nan=False)

    @staticmethod
    def from_json(text: str | bytes) -> "Context":
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"Failed to deserialize from JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"Failed to deserialize from JSON: expected an object, got {type(data).__name__}")
        return Context(data)

    def secret(self, name: str) -> dict[str, str]:
        """The fields of a secret the runtime resolves; never stored in the context."""
        return secrets.read_secret(name, self._data.get(secrets.SECRET_REFS_KEY))

    def secret_field(self, name: str, field: str) -> str:
        """One field of a secret; KeyError when the secret has no such field."""
        return secrets.read_secret_field(name, field, self._data.get(secrets.SECRET_REFS_KEY))

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> Any:
        value = self._data.get(key)
        if value is None:
            raise KeyError(f"Key not found: '{key}'")
        return to_json_value(key, value)

    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self._data:
            raise KeyError(f"Key not found: '{key}'")
        del self._changing()[key]

    def __repr__(self) -> str:
        return f"Context({self.to_json()})"

    # --- beyond the engine -------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def keys(self) -> list[str]:
        return list(self._data)

    def items(self) -> list[tuple[str, Any]]:
        return [(key, to_json_value(key, value)) for key, value in self._data.items()]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Context):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment] - mutable
