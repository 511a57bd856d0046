"""Per-tenant admission at the edge: one tenant's load never refuses another tenant's requests.

Each tenant may have a bounded number of requests in progress at once (calls,
workflow runs and package reads together) and a smaller number of uploads; past
either, that tenant's next request is refused at once with RESOURCE_EXHAUSTED.
Nothing here is shared between tenants, and the health and reflection services
are not counted at all.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator


class QuotaExceeded(Exception):
    pass


class TenantQuotas:
    def __init__(self, max_requests: int, max_uploads: int) -> None:
        self.limits = {"request": max_requests, "upload": max_uploads}
        self._in_progress: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def admit(self, tenant: str, kind: str = "request") -> Iterator[None]:
        key = (tenant, kind)
        limit = self.limits[kind]
        if self._in_progress[key] >= limit:
            plural = "uploads" if kind == "upload" else "requests"
            raise QuotaExceeded(f"tenant {tenant!r} already has {limit} {plural} in progress; "
                                "try again when some have finished")
        self._in_progress[key] += 1
        try:
            yield
        finally:
            self._in_progress[key] -= 1
            if not self._in_progress[key]:
                del self._in_progress[key]

    def in_progress(self, tenant: str, kind: str = "request") -> int:
        return self._in_progress[(tenant, kind)]
