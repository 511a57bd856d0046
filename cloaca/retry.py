"""Retry policies: `RetryPolicy`, `RetryPolicyBuilder`, `BackoffStrategy`, `RetryCondition`.

The engine's rules (crates/cloacina-workflow/src/retry.rs):
- `max_attempts` counts every attempt, the first included; attempts are
  numbered from 1 and another is allowed while `attempt < max_attempts`
  (so 0 and 1 both mean "no retry");
- the delay after attempt n is: fixed = initial; linear = initial * n * m;
  exponential = initial * m * base^(n-1); then capped at `max_delay`, then,
  with jitter, multiplied by a random factor in [0.75, 1.25];
- a failure is retried if any condition allows it: all errors, never,
  transient only, or an error message containing one of some patterns;
- the default: 3 attempts, exponential (base 2, multiplier 1), 1 s initial
  delay, 60 s cap, jitter on, retry on all errors.

Policies are plain data (`to_dict` / `from_dict`) so the engine that applies
them can run in another process from the code that declared them.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

FIXED, LINEAR, EXPONENTIAL = "fixed", "linear", "exponential"
ALL_ERRORS, NEVER, TRANSIENT_ONLY, ERROR_PATTERN = "AllErrors", "Never", "TransientOnly", "ErrorPattern"

# What makes a task's failure "transient" (executor/result_handler.rs in the engine).
TRANSIENT_WORDS = ("timeout", "connection", "network", "temporary", "unavailable")


def is_transient_message(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in TRANSIENT_WORDS)


def _rust_float(value: float) -> str:
    """A float as Rust's Display writes it: 1.0 -> "1", 0.5 -> "0.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _seconds_to_ms(seconds: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(f"a delay is a non-negative number of seconds, not {seconds!r}")
    return int(round(seconds * 1_000_000)) // 1000


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__qualname__}")
    if value < 0:
        raise OverflowError(f"{name} must not be negative, got {value}")
    return value


@dataclass(frozen=True)
class BackoffStrategy:
    kind: str = EXPONENTIAL
    base: float = 2.0
    multiplier: float = 1.0

    @staticmethod
    def fixed() -> "BackoffStrategy":
        return BackoffStrategy(FIXED, 0.0, 0.0)

    @staticmethod
    def linear(multiplier: float) -> "BackoffStrategy":
        return BackoffStrategy(LINEAR, 0.0, float(multiplier))

    @staticmethod
    def exponential(base: float, multiplier: float | None = None) -> "BackoffStrategy":
        return BackoffStrategy(EXPONENTIAL, float(base), 1.0 if multiplier is None else float(multiplier))

    def base_delay_ms(self, initial_ms: int, attempt: int) -> int:
        if self.kind == FIXED:
            return initial_ms
        if self.kind == LINEAR:
            return int(initial_ms * attempt * self.multiplier)
        return int(initial_ms * self.multiplier * self.base ** (attempt - 1))

    def to_dict(self) -> dict[str, Any]:
        return {"backoff": self.kind, "backoff_base": self.base, "backoff_multiplier": self.multiplier}

    def __repr__(self) -> str:
        if self.kind == FIXED:
            return "BackoffStrategy.Fixed"
        if self.kind == LINEAR:
            return f"BackoffStrategy.Linear(multiplier={_rust_float(self.multiplier)})"
        return f"BackoffStrategy.Exponential(base={_rust_float(self.base)}, multiplier={_rust_float(self.multiplier)})"


@dataclass(frozen=True)
class RetryCondition:
    kind: str = ALL_ERRORS
    patterns: tuple[str, ...] = ()

    @staticmethod
    def never() -> "RetryCondition":
        return RetryCondition(NEVER)

    @staticmethod
    def transient_only() -> "RetryCondition":
        return RetryCondition(TRANSIENT_ONLY)

    @staticmethod
    def all_errors() -> "RetryCondition":
        return RetryCondition(ALL_ERRORS)

    @staticmethod
    def error_pattern(patterns: Iterable[str]) -> "RetryCondition":
        if isinstance(patterns, str):
            raise TypeError("error_pattern takes a list of strings, not one string")
        return RetryCondition(ERROR_PATTERN, tuple(str(pattern) for pattern in patterns))

    def allows(self, message: str, transient: bool) -> bool:
        if self.kind == ALL_ERRORS:
            return True
        if self.kind == NEVER:
            return False
        if self.kind == TRANSIENT_ONLY:
            return transient
        lowered = message.lower()
        return any(pattern.lower() in lowered for pattern in self.patterns)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.kind}
        if self.kind == ERROR_PATTERN:
            data["patterns"] = list(self.patterns)
        return data

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RetryCondition":
        kind = data.get("type", ALL_ERRORS)
        if kind not in (ALL_ERRORS, NEVER, TRANSIENT_ONLY, ERROR_PATTERN):
            raise ValueError(f"unknown retry condition {kind!r}")
        return RetryCondition(kind, tuple(data.get("patterns") or ()))

    def __repr__(self) -> str:
        if self.kind == ERROR_PATTERN:
            return "RetryCondition.ErrorPattern(patterns=[" + ", ".join(f'"{p}"' for p in self.patterns) + "])"
        return f"RetryCondition.{self.kind}"


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how far apart, a failed task is tried again."""

    max_attempts: int = 3
    backoff_strategy: BackoffStrategy = field(default_factory=lambda: BackoffStrategy.exponential(2.0, 1.0))
    initial_delay_ms: int = 1000
    max_delay_ms: int = 60_000
    jitter: bool = True
    retry_conditions: tuple[RetryCondition, ...] = (RetryCondition(ALL_ERRORS),)

    # --- the engine's Python surface ---------------------------------------------

    @staticmethod
    def builder() -> "RetryPolicyBuilder":
        return RetryPolicyBuilder()

    @staticmethod
    def default() -> "RetryPolicy":
        return RetryPolicy()

    @property
    def initial_delay(self) -> float:
        """Seconds."""
        return self.initial_delay_ms / 1000.0

    @property
    def max_delay(self) -> float:
        """Seconds."""
        return self.max_delay_ms / 1000.0

    @property
    def with_jitter(self) -> bool:
        return self.jitter

    def should_retry(self, attempt: int, error_type: str = "") -> bool:
        """Whether attempt number `attempt` may be followed by another (the engine ignores `error_type`)."""
        return attempt < self.max_attempts

    def calculate_delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number `attempt` (jittered when jitter is on)."""
        return self.delay_ms(attempt) / 1000.0

    def __repr__(self) -> str:
        return (f"RetryPolicy(max_attempts={self.max_attempts}, initial_delay={_rust_float(self.initial_delay)}s, "
                f"max_delay={_rust_float(self.max_delay)}s, jitter={'true' if self.jitter else 'false'})")

    # --- what the engine applies ---------------------------------------------------

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        capped = min(self.backoff_strategy.base_delay_ms(self.initial_delay_ms, attempt), self.max_delay_ms)
        if not self.jitter:
            return capped
        factor = (rng or random).uniform(0.75, 1.25)
        return int(capped * factor)

    def allows_retry(self, attempt: int, message: str, transient: bool) -> bool:
        """After failed attempt number `attempt` with this error message, try again?"""
        if attempt >= self.max_attempts:
            return False
        return any(condition.allows(message, transient) for condition in self.retry_conditions)

    def to_dict(self) -> dict[str, Any]:
        """The discovery form (protos/sandbox_runtime/protocol/sandbox.proto, RetryPolicy)."""
        return {
            "max_attempts": self.max_attempts,
            "attempts": max(0, self.max_attempts - 1),  # retries after the first try, for older readers
            **self.backoff_strategy.to_dict(),
            "delay_ms": self.initial_delay_ms,
            "max_delay_ms": self.max_delay_ms,
            "jitter": self.jitter,
            "conditions": [condition.to_dict() for condition in self.retry_conditions],
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RetryPolicy":
        kind = data.get("backoff", EXPONENTIAL)
        if kind not in (FIXED, LINEAR, EXPONENTIAL):
            raise ValueError(f"unknown backoff strategy {kind!r}")
        max_attempts = data.get("max_attempts")
        if max_attempts is None:
            max_attempts = int(data.get("attempts", 2)) + 1
        conditions = data.get("conditions") or [{"type": ALL_ERRORS}]
        return RetryPolicy(
            max_attempts=int(max_attempts),
            backoff_strategy=BackoffStrategy(kind, float(data.get("backoff_base", 2.0)),
                                             float(data.get("backoff_multiplier", 1.0))),
            initial_delay_ms=int(data.get("delay_ms", 1000)),
            max_delay_ms=int(data.get("max_delay_ms", 60_000)),
            jitter=bool(data.get("jitter", True)),
            retry_conditions=tuple(RetryCondition.from_dict(c) for c in conditions),
        )


class RetryPolicyBuilder:
    """Chainable: each call returns a new builder; `build()` fills the rest from the default."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self._policy = policy or RetryPolicy()

    def _with(self, **changes: Any) -> "RetryPolicyBuilder":
        return RetryPolicyBuilder(replace(self._policy, **changes))

    def max_attempts(self, attempts: int) -> "RetryPolicyBuilder":
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise TypeError(f"max_attempts must be an int, not {type(attempts).__qualname__}")
        return self._with(max_attempts=attempts)

    def initial_delay(self, delay_seconds: float) -> "RetryPolicyBuilder":
        return self._with(initial_delay_ms=_seconds_to_ms(delay_seconds))

    def max_delay(self, delay_seconds: float) -> "RetryPolicyBuilder":
        return self._with(max_delay_ms=_seconds_to_ms(delay_seconds))

    def backoff_strategy(self, strategy: BackoffStrategy) -> "RetryPolicyBuilder":
        if not isinstance(strategy, BackoffStrategy):
            raise TypeError(f"expected a cloaca.BackoffStrategy, not {type(strategy).__qualname__}")
        return self._with(backoff_strategy=strategy)

    def retry_condition(self, condition: RetryCondition) -> "RetryPolicyBuilder":
        if not isinstance(condition, RetryCondition):
            raise TypeError(f"expected a cloaca.RetryCondition, not {type(condition).__qualname__}")
        return self._with(retry_conditions=(condition,))

    def with_jitter(self, jitter: bool) -> "RetryPolicyBuilder":
        return self._with(jitter=bool(jitter))

    def build(self) -> RetryPolicy:
        return self._policy

    def __repr__(self) -> str:
        return f"RetryPolicyBuilder({self._policy!r})"


_BACKOFFS = {FIXED: BackoffStrategy.fixed, LINEAR: lambda: BackoffStrategy.linear(1.0),
             EXPONENTIAL: lambda: BackoffStrategy.exponential(2.0, 1.0)}
_CONDITIONS = {"never": RetryCondition.never, "transient": RetryCondition.transient_only,
               "all": RetryCondition.all_errors}
RETRY_KEYWORDS = ("retry_attempts", "retry_backoff", "retry_delay_ms", "retry_max_delay_ms",
                  "retry_condition", "retry_jitter")


def policy_from_keywords(retry_attempts: int | None = None, retry_backoff: str | None = None,
                         retry_delay_ms: int | None = None, retry_max_delay_ms: int | None = None,
                         retry_condition: str | None = None, retry_jitter: bool | None = None) -> RetryPolicy:
    """`@task(retry_*=...)`: each keyword given overrides the default policy.

    As in the engine, an unknown backoff means fixed and an unknown condition
    means all errors; we also warn, since that is almost always a typo.
    """
    policy = RetryPolicy()
    if retry_attempts is not None:
        policy = replace(policy, max_attempts=_non_negative_int("retry_attempts", retry_attempts))
    if retry_backoff is not None:
        make = _BACKOFFS.get(str(retry_backoff))
        if make is None:
            warnings.warn(f"unknown retry_backoff {retry_backoff!r} (expected 'fixed', 'linear' or 'exponential'): "
                          "using fixed, as the engine does", RuntimeWarning, stacklevel=3)
            make = BackoffStrategy.fixed
        policy = replace(policy, backoff_strategy=make())
    if retry_delay_ms is not None:
        policy = replace(policy, initial_delay_ms=_non_negative_int("retry_delay_ms", retry_delay_ms))
    if retry_max_delay_ms is not None:
        policy = replace(policy, max_delay_ms=_non_negative_int("retry_max_delay_ms", retry_max_delay_ms))
    if retry_condition is not None:
        make_condition = _CONDITIONS.get(str(retry_condition))
        if make_condition is None:
            warnings.warn(f"unknown retry_condition {retry_condition!r} (expected 'never', 'transient' or 'all'): "
                          "retrying on all errors, as the engine does", RuntimeWarning, stacklevel=3)
            make_condition = RetryCondition.all_errors
        policy = replace(policy, retry_conditions=(make_condition(),))
    if retry_jitter is not None:
        policy = replace(policy, jitter=bool(retry_jitter))
    return policy
