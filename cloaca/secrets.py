"""Secrets as a task reads them: `context.secret(name)` and `context.secret_field(name, field)`.

The runtime that runs tasks installs a resolver (`install_resolver`): inside
a sandbox, one holding only the secrets the package declared with
`@cloaca.workflow_secrets`, as the operator supplied them; locally, whatever
the author installs (`StaticSecrets` for tests). A resolved value is handed
to the caller only: it is never written into a context, so it cannot reach a
context's JSON, and no error message here ever includes a value.

Errors follow the engine: RuntimeError when no resolver is installed,
PermissionError for a name the package did not declare, KeyError for a
secret or field that is not there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Protocol

# The reserved context key mapping a declared local alias to the secret's real name.
SECRET_REFS_KEY = "__cloacina_secret_refs__"


class SecretResolver(Protocol):
    def secret(self, name: str) -> dict[str, str]:
        """The secret's fields; KeyError, PermissionError or RuntimeError when it cannot be had."""


class StaticSecrets:
    """Secrets held in memory: `{name: {field: value}}`.

    With `declared`, only those names may be read (others raise
    PermissionError), as inside a sandbox; without it, any name present.
    """

    def __init__(self, secrets: Mapping[str, Mapping[str, str]],
                 declared: Iterable[str] | None = None) -> None:
        self._secrets = {str(name): {str(f): str(v) for f, v in fields.items()}
                         for name, fields in secrets.items()}
        self._declared = None if declared is None else frozenset(declared)

    def secret(self, name: str) -> dict[str, str]:
        if self._declared is not None and name not in self._declared:
            raise PermissionError(
                f"secret {name!r} is not granted to this package: declare it with "
                f"@cloaca.workflow_secrets({name!r})")
        fields = self._secrets.get(name)
        if fields is None:
            raise KeyError(f"secret {name!r} not found: the operator has not supplied it")
        return dict(fields)

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def __repr__(self) -> str:  # never the values
        return f"StaticSecrets(names={self.names()!r})"


_lock = threading.Lock()
_resolver: SecretResolver | None = None


def install_resolver(resolver: SecretResolver | None) -> None:
    """Make `resolver` answer every context's secret reads in this interpreter (None removes it)."""
    global _resolver
    with _lock:
        _resolver = resolver


def current_resolver() -> SecretResolver:
    resolver = _resolver
    if resolver is None:
        raise RuntimeError(
            "no secret resolver is configured: this host supplies secrets only to packages that "
            "declare them with @cloaca.workflow_secrets, from the operator's secrets file "
            "(locally, install one with cloaca.secrets.install_resolver)")
    return resolver


def resolve_name(name: str, refs: object) -> str:
    """The secret's real name when `name` is a local alias in the context's reserved refs map."""
    if isinstance(refs, Mapping):
        target = refs.get(name)
        if isinstance(target, str) and target:
            return target
    return name


def read_secret(name: str, refs: object = None) -> dict[str, str]:
    if not isinstance(name, str):
        raise TypeError(f"a secret name is a string, not {type(name).__qualname__}")
    return current_resolver().secret(resolve_name(name, refs))


def read_secret_field(name: str, field: str, refs: object = None) -> str:
    fields = read_secret(name, refs)
    if field not in fields:
        raise KeyError(f"secret {name!r} has no field {field!r} (its fields: {', '.join(sorted(fields)) or 'none'})")
    return fields[field]
