"""The operator's secrets file, and the secrets a package may have from it.

Format (TOML), one table per secret, one string per field. Top-level tables are
the secrets of the `default` tenant (the embedding API's packages, watched
directories, a service without API keys); `[tenants.NAME.SECRET]` tables belong
to tenant NAME, and no other tenant's package ever receives them:

    # secrets.toml: readable by the service's user only (chmod 600)
    [warehouse]
    url = "postgresql://analytics@db/warehouse"
    password = "s3cret"

    [tenants.acme.warehouse]
    url = "postgresql://acme@db/warehouse"
    password = "acme-s3cret"

A package reads them with `context.secret("warehouse")` (all fields, as a
dict) or `context.secret_field("warehouse", "password")`, and must declare
each name with `@cloaca.workflow_secrets("warehouse")`. `SecretStore.for_names`
answers "the secrets for these declared names": a sandbox is given those and
nothing else, sent over its link after it is imported (never through its
environment). Values never appear in a repr, a log line or an error message
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


DEFAULT_TENANT = "default"
TENANTS_TABLE = "tenants"


class SecretStore:
    """One tenant's secrets; `tenants` holds the other tenants' stores (`for_tenant`)."""

    def __init__(self, secrets: dict[str, dict[str, SecretStr]] | None = None,
                 tenants: dict[str, "SecretStore"] | None = None) -> None:
        self._secrets = dict(secrets or {})
        self._tenants = dict(tenants or {})

    def for_tenant(self, tenant: str | None) -> "SecretStore":
        """The store of `tenant`'s secrets (the top-level tables for the default tenant)."""
        if tenant in (None, "", DEFAULT_TENANT):
            return SecretStore(self._secrets)
        return self._tenants.get(tenant, SecretStore())

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
        tenants = document.pop(TENANTS_TABLE, {})
        if not isinstance(tenants, dict) or not all(isinstance(value, dict) for value in tenants.values()):
            raise SecretsFileError(f"{source}: [{TENANTS_TABLE}] holds one table per tenant "
                                   f"([{TENANTS_TABLE}.NAME.SECRET] field = \"value\")")
        return cls(cls._validated(document, source, ""),
                   {tenant: cls(cls._validated(secrets, source, f"{TENANTS_TABLE}.{tenant}."))
                    for tenant, secrets in tenants.items()})

    @staticmethod
    def _validated(document: dict[str, object], source: str, prefix: str) -> dict[str, dict[str, SecretStr]]:
        try:
            return _SecretsFile.model_validate(document).root
        except ValidationError as exc:
            # Name where, never what: the input is the secret itself.
            places = sorted({prefix + ".".join(str(part) for part in error["loc"]) for error in exc.errors()})
            raise SecretsFileError(f"{source}: each secret is a table of string fields ([name] field = \"value\"); "
                                   f"not so at: {', '.join(places)}") from None

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
        return f"SecretStore(names={self.names()!r}, tenants={sorted(self._tenants)!r})"


def load_secrets(path: str | os.PathLike[str] | None) -> SecretStore:
    """The store for an optional `--secrets FILE`: empty when none is given."""
    return SecretStore.load(Path(path)) if path else SecretStore()
