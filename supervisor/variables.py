"""Configuration variables (`cloaca.var(NAME)`), per tenant.

A package reads `cloaca.var("DATA_SOURCE")`, which is the variable
`CLOACINA_VAR_DATA_SOURCE` in its sandbox's environment. Which variables a
sandbox gets depends on its tenant, so a value set for one tenant never reaches
another tenant's code:

- the service's own `CLOACINA_VAR_*` environment goes to the `default` tenant's
  packages only (the embedding API's, watched directories', a keyless service's);
- a variables file (`--vars FILE`, TOML) adds or overrides them per tenant:

      [default]
      DATA_SOURCE = "s3://shared/raw"

      [tenants.acme]
      DATA_SOURCE = "s3://acme/raw"
      REGION = "eu-west-1"

Values are strings; names are what `cloaca.var` takes (no CLOACINA_VAR_ prefix).
Variables are configuration, not secrets: they are in the sandbox's environment,
which its code and its children can read. Secrets go in the secrets file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

VAR_PREFIX = "CLOACINA_VAR_"
DEFAULT_TENANT = "default"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class VariablesFileError(ValueError):
    """The variables file cannot be read or is not in the documented form."""


class Variables:
    def __init__(self, by_tenant: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._by_tenant = {tenant: dict(values) for tenant, values in (by_tenant or {}).items()}

    @classmethod
    def load(cls, path: Path | None) -> "Variables":
        if path is None:
            return cls()
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise VariablesFileError(f"cannot read the variables file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise VariablesFileError(f"the variables file {path} is not valid TOML: {exc}") from None
        tables = {DEFAULT_TENANT: document.pop(DEFAULT_TENANT, {})}
        tenants = document.pop("tenants", {})
        if document:
            raise VariablesFileError(f"{path}: unknown tables {sorted(document)}; use [default] and "
                                     "[tenants.NAME]")
        if not isinstance(tenants, dict):
            raise VariablesFileError(f"{path}: [tenants] holds one table per tenant ([tenants.NAME])")
        tables.update(tenants)
        for tenant, values in tables.items():
            where = "[default]" if tenant == DEFAULT_TENANT else f"[tenants.{tenant}]"
            if not isinstance(values, dict):
                raise VariablesFileError(f"{path}: {where} must be a table of NAME = \"value\"")
            for name, value in values.items():
                if not _NAME.match(name) or not isinstance(value, str):
                    raise VariablesFileError(f"{path}: {where} {name}: each variable is NAME = \"string value\"")
        return cls(tables)

    def environment(self, tenant: str | None) -> dict[str, str]:
        """The CLOACINA_VAR_* a sandbox of `tenant` gets (None is the default tenant)."""
        tenant = tenant or DEFAULT_TENANT
        env: dict[str, str] = {}
        if tenant == DEFAULT_TENANT:
            env.update({key: value for key, value in os.environ.items() if key.startswith(VAR_PREFIX)})
        env.update({VAR_PREFIX + name: value for name, value in self._by_tenant.get(tenant, {}).items()})
        return env
