"""`@cloaca.trigger(...)` and `cloaca.TriggerResult`.

As in the engine: `trigger(*, name=None, on=None, poll_interval=None, cron=None,
timezone=None, allow_concurrent=False)` needs no workflow context, returns the
function unchanged, and is recorded for the loader; `cron` and `poll_interval`
exclude each other, `cron` needs `on`, and a poll interval reads
`<int><ms|s|m|h>` (default "30s"). A poll function takes no arguments and
returns a TriggerResult or a bool; `poll_answer` reads what it returned.

Triggers fire through `cloaca.schedules`: in the service, a loaded package's
triggers become its tenant's schedules and poll functions run in its sandbox;
in-process, a `DefaultRunner` schedules the triggers declared in its process.
"""

from __future__ import annotations

import re
from typing import Any, Callable, TypeVar

from cloaca.context import Context
from cloaca.registry import REGISTRY, TriggerSpec

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_POLL_INTERVAL = "30s"
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def parse_duration_ms(text: str) -> int:
    """'500ms', '30s', '5m', '1h' in milliseconds; ValueError otherwise."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"Invalid poll_interval {text!r}: expected a whole number followed by ms, s, m or h "
                         "(e.g. '500ms', '30s', '5m', '1h')")
    number, unit = int(match.group(1)), match.group(2)
    return number * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[unit]


class TriggerDecorator:
    def __init__(self, *, name: str | None, on: str | None, poll_interval: str | None, cron: str | None,
                 timezone: str | None, allow_concurrent: bool) -> None:
        self.name = name
        self.on = on
        self.poll_interval = poll_interval
        self.cron = cron
        self.timezone = timezone
        self.allow_concurrent = allow_concurrent

    def __call__(self, function: F) -> F:
        name = self.name if self.name is not None else getattr(function, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"@cloaca.trigger decorates a function, not {type(function).__qualname__}")
        REGISTRY.add_trigger(TriggerSpec(name=name, function=function, workflow=self.on,
                                         poll_interval=self.poll_interval, cron=self.cron, timezone=self.timezone,
                                         allow_concurrent=self.allow_concurrent))
        return function

    def __repr__(self) -> str:
        return f"TriggerDecorator(name={self.name!r}, on={self.on!r})"


def trigger(*, name: str | None = None, on: str | None = None, poll_interval: str | None = None,
            cron: str | None = None, timezone: str | None = None, allow_concurrent: bool = False) -> TriggerDecorator:
    """Declare a trigger that fires workflow `on`: on a cron schedule, or when its poll function says so."""
    if cron is not None and poll_interval is not None:
        raise ValueError("@cloaca.trigger: `cron` and `poll_interval` are mutually exclusive")
    if cron is not None and on is None:
        raise ValueError("@cloaca.trigger(cron=...) requires `on=` (the workflow the schedule fires)")
    if cron is None:
        poll_interval = poll_interval if poll_interval is not None else DEFAULT_POLL_INTERVAL
        parse_duration_ms(poll_interval)
    return TriggerDecorator(name=name, on=on, poll_interval=poll_interval, cron=cron, timezone=timezone,
                            allow_concurrent=bool(allow_concurrent))


class TriggerResult:
    """What a poll trigger returns: skip, or fire (with the workflow's initial context)."""

    __slots__ = ("_context", "_fire")

    def __init__(self, fire: bool = False, context: Context | None = None) -> None:
        self._fire = fire
        self._context = context

    @staticmethod
    def skip() -> "TriggerResult":
        return TriggerResult(False)

    @staticmethod
    def fire(context: Context | None = None) -> "TriggerResult":
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"TriggerResult.fire takes a cloaca.Context or None, not {type(context).__qualname__}")
        return TriggerResult(True, context)

    @property
    def context(self) -> Context | None:
        return self._context

    def is_fire_result(self) -> bool:
        return self._fire

    def is_skip_result(self) -> bool:
        return not self._fire

    def __repr__(self) -> str:
        if not self._fire:
            return "TriggerResult.Skip"
        return f"TriggerResult.Fire({self._context!r})" if self._context is not None else "TriggerResult.Fire(None)"


def poll_answer(value: Any) -> tuple[bool, dict[str, Any]]:
    """What a poll function's return value means: (fire?, the run's initial context).

    `TriggerResult.fire(ctx)` fires with ctx, `TriggerResult.fire()` and `True` with an empty
    context, `skip()` and `False` do not fire; anything else is a TypeError (a poll error, as
    in the engine).
    """
    if isinstance(value, TriggerResult):
        if not value.is_fire_result():
            return False, {}
        return True, value.context.to_dict() if value.context is not None else {}
    if isinstance(value, bool):
        return value, {}
    raise TypeError(f"a trigger's poll function must return cloaca.TriggerResult or a bool, not "
                    f"{type(value).__qualname__}")
