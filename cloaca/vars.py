"""`cloaca.var` / `cloaca.var_or`: configuration read from CLOACINA_VAR_* variables."""

from __future__ import annotations

import os

PREFIX = "CLOACINA_VAR_"


class VariableNotFoundError(KeyError):
    """cloaca.var(NAME) when CLOACINA_VAR_NAME is not set (a KeyError, as in the engine)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"required variable '{name}' not set (expected env var {PREFIX}{name})")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def var(name: str) -> str:
    """The value of CLOACINA_VAR_<name>; VariableNotFoundError (a KeyError) when unset."""
    value = os.environ.get(PREFIX + name)
    if value is None:
        raise VariableNotFoundError(name)
    return value


def var_or(name: str, default: str) -> str:
    """The value of CLOACINA_VAR_<name>, or `default` when unset."""
    return os.environ.get(PREFIX + name, default)
