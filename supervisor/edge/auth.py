"""API keys: a key file of `TENANT KEY` lines, each key bound to its tenant."""

from __future__ import annotations

import hmac
import re
from pathlib import Path

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class KeyFileError(ValueError):
    pass


def load_api_keys(path: Path) -> dict[str, str]:
    """Parse the key file into {key: tenant}; '#' starts a comment."""
    keys: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KeyFileError(f"cannot read the API key file {path}: {exc.strerror}") from None
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyFileError(f"{path}:{number}: expected 'TENANT KEY', got {len(parts)} fields")
        tenant, key = parts
        if not _TENANT.match(tenant):
            raise KeyFileError(f"{path}:{number}: tenant {tenant!r} may hold only letters, digits, '.', '_', '-'")
        if len(key) < 16:
            raise KeyFileError(f"{path}:{number}: the key for {tenant!r} is shorter than 16 characters")
        if key in keys:
            raise KeyFileError(f"{path}:{number}: this key is already given to tenant {keys[key]!r}")
        keys[key] = tenant
    if not keys:
        raise KeyFileError(f"{path} holds no keys")
    return keys


class Authenticator:
    """Maps a request's `authorization: Bearer KEY` to a tenant; None keys means one open tenant."""

    def __init__(self, keys: dict[str, str] | None, open_tenant: str = "default") -> None:
        self.keys = keys
        self.open_tenant = open_tenant

    @property
    def required(self) -> bool:
        return self.keys is not None

    def tenant_for(self, authorization: str | None) -> str | None:
        """The caller's tenant, or None when the credentials are missing or wrong."""
        if self.keys is None:
            return self.open_tenant
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = authorization[len("Bearer "):].strip()
        for key, tenant in self.keys.items():  # compare every key in constant time
            if hmac.compare_digest(key.encode(), presented.encode()):
                return tenant
        return None
