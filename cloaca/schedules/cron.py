"""Cron expressions as the engine reads them: five fields, or six with seconds first, in a timezone.

    CronExpression("*/3 * * * * *")             every 3 seconds
    CronExpression("0 2 * * *", "Europe/Paris")  02:00 Paris time, whatever the season

Parsing and iteration are croniter's (the engine uses croner with optional
seconds, the same reading); timezones are IANA names through zoneinfo, and the
next fire is computed in that timezone, then returned in UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc


class CronError(ValueError):
    """A cron expression or timezone that cannot be used."""


def _croniter() -> Any:
    from croniter import croniter  # 30 ms to import: only once a cron expression is read

    return croniter


class CronExpression:
    def __init__(self, expression: str, timezone_name: str | None = None) -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise CronError(f"a cron expression is a string of 5 or 6 fields, not {expression!r}")
        self.expression = " ".join(expression.split())
        fields = len(self.expression.split())
        if fields not in (5, 6):
            raise CronError(f"cron expression {expression!r} has {fields} fields: use 5 (minute hour day month "
                            "weekday) or 6 (seconds first)")
        self.with_seconds = fields == 6
        if not _croniter().is_valid(self.expression, second_at_beginning=self.with_seconds):
            raise CronError(f"cron expression {expression!r} is not valid")
        self.timezone_name = timezone_name or "UTC"
        try:
            self.zone = ZoneInfo(self.timezone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown timezone {self.timezone_name!r}: use an IANA name such as 'UTC' or "
                            "'Europe/Paris'") from None

    def next_time(self, after: float) -> float:
        """The first fire strictly after `after`, both in seconds since the epoch."""
        return self.next_after(datetime.fromtimestamp(after, UTC)).timestamp()

    def next_after(self, moment: datetime) -> datetime:
        """The first fire strictly after `moment` (an aware datetime), in UTC."""
        local = moment.astimezone(self.zone)
        following = _croniter()(self.expression, local, second_at_beginning=self.with_seconds).get_next(datetime)
        return following.astimezone(UTC)

    def __repr__(self) -> str:
        return f"CronExpression({self.expression!r}, {self.timezone_name!r})"
