"""The operator's secrets file, and the secrets a package may have from it.

Format (TOML), one table per secret, one string per field:

    # secrets.toml: readable by the service's user only (chmod 600)
    [warehouse]
    url = "postgresql://analytics@db/warehouse"
    password = "s3cret"

    [api_token]
    value = "abc123"

A package reads them with `context.secret("warehouse")` (all fields, as a
dict) or `context.secret_field("warehouse", "password")`, and must declare
each name with `@cloaca.workflow_secrets("warehouse")`. `SecretStore.for_names`
answers "the secrets for these declared names": a sandbox is given those and
nothing else. Values never appear in a repr, a log line or an error message
of this module; pydantic's SecretStr holds them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pydantic import RootModel, SecretStr, ValidationError

import tomllib


class SecretsFileError(ValueError):
    """The secrets file cannot be read, is readable by others, or is not in the documented form."""


class _SecretsFile(RootModel[dict[str, dict[str, SecretStr]]]):
    pass


class SecretStore:
    def __init__(self, secrets: dict[str, dict[str, SecretStr]] | None = None) -> None:
        self._secrets = dict(secrets or {})

    @classmethod
    def load(cls, path: Path) -> "SecretStore":
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretsFileError(f"cannot read the secrets file {path}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsFileError(f"the secrets file {path} is open to other users (mode {stat.S_IMODE(mode):o}); "
                                   f"make it readable by the service's user only: chmod 600 {path}")
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "the secrets file") -> "SecretStore":
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SecretsFileError(f"{source} is not valid TOML: {exc}") from None
        try:
            parsed = _SecretsFile.model_validate(document).root
        except ValidationError as exc:
            # Name where, never what: the input is the secret itself.
            places = sorted({".".join(str(part) for part in error["loc"]) for error in exc.errors()})
            raise SecretsFileError(f"{source}: each secret is a table of string fields ([name] field = \"value\"); "
                                   f"not so at: {', '.join(places)}") from None
        return cls(parsed)

    def names(self) -> list[str]:
        return sorted(self._secrets)

    def for_names(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """The declared secrets the file has, as plain strings, to hand to a sandbox; absent ones are left out."""
        return {name: {field: value.get_secret_value() for field, value in self._secrets[name].items()}
                for name in dict.fromkeys(names) if name in self._secrets}

    def missing(self, names: Iterable[str]) -> list[str]:
        """Declared names the file does not have (worth a warning at load: reading one raises KeyError)."""
        return [name for name in dict.fromkeys(names) if name not in self._secrets]

    def __repr__(self) -> str:
        return f"SecretStore(names={self.names()!r})"


def load_secrets(path: str | os.PathLike[str] | None) -> SecretStore:
    """The store for an optional `--secrets FILE`: empty when none is given."""
    return SecretStore.load(Path(path)) if path else SecretStore()
