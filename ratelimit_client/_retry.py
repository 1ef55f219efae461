"""The retry policy: which outcomes retry, how long to wait, when to stop.

Built on tenacity's retry state machine (``Retrying.iter``), which the engine drives one
step at a time so that sync and async share it; tenacity's types stay private.
"""

from __future__ import annotations

import dataclasses
import math
import random
import typing

import tenacity

from ._backoff import full_jitter
from ._exceptions import ConfigError
from ._headers import ResetFormat

__all__ = ["Outcome", "RetryPolicy", "make_retrying"]

OutcomeKind = typing.Literal["ok", "throttled", "server_error", "network_error", "final"]


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How patiently to retry. Throttling (429) and failures (network errors, 5xx) have
    separate budgets: an outage deserves patience, a 429 storm must not multiply traffic.

    Waits are the server's (``Retry-After`` and friends) when it gives one, else
    exponential backoff with full jitter from ``backoff_base`` up to ``backoff_max``.
    A server-told wait above ``max_server_wait``, or past a budget's time, is not slept:
    the request fails at once with :class:`ServerWaitTooLong`.
    """

    throttle_attempts: int = 10
    throttle_timeout: float = 900.0
    failure_attempts: int = 30
    failure_timeout: float = 300.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_server_wait: float = 300.0
    retry_unsafe: bool = False
    retry_budget_ratio: float = 0.2
    reset_format: ResetFormat = "auto"

    def __post_init__(self) -> None:
        for name in ("throttle_attempts", "failure_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"retry.{name}", value, "an integer of at least 1")
        for name in ("throttle_timeout", "failure_timeout", "backoff_base", "backoff_max", "max_server_wait"):
            value = getattr(self, name)
            if not _is_number(value) or not (value >= 0 and _is_finite(value)):
                raise ConfigError(f"retry.{name}", value, "a finite number of seconds, 0 or more")
        if not _is_number(self.retry_budget_ratio) or not 0 <= self.retry_budget_ratio <= 10:
            raise ConfigError("retry.retry_budget_ratio", self.retry_budget_ratio, "a number from 0 to 10")
        if not isinstance(self.retry_unsafe, bool):
            raise ConfigError("retry.retry_unsafe", self.retry_unsafe, "true or false")
        if self.reset_format not in ("auto", "epoch", "epoch_ms", "delta"):
            raise ConfigError("retry.reset_format", self.reset_format, "auto, epoch, epoch_ms or delta")


def _is_number(value: object) -> typing.TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: float) -> bool:
    # An int too large for a float makes math.isfinite raise OverflowError.
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


@dataclasses.dataclass(slots=True)
class Tally:
    """One request's retry history, per budget. ``clock`` is monotonic seconds."""

    clock: typing.Callable[[], float]
    throttled: int = 0
    failures: int = 0
    throttled_since: float | None = None
    failing_since: float | None = None
    too_long: float | None = None  # the server-told wait that was refused, if any

    def record(self, kind: OutcomeKind) -> None:
        if kind == "throttled":
            self.throttled += 1
            if self.throttled_since is None:
                self.throttled_since = self.clock()
        elif kind in ("server_error", "network_error"):
            self.failures += 1
            if self.failing_since is None:
                self.failing_since = self.clock()


# Built for every attempt: a plain slotted dataclass (a frozen one pays an
# object.__setattr__ per field), never mutated once made.
@dataclasses.dataclass(slots=True)
class Outcome:
    """What one attempt came to. ``value`` is the response or the transport error."""

    kind: OutcomeKind
    tally: Tally
    value: object = None
    server_wait: float | None = None
    retry: bool = False
    reason: str = ""
    # A retry of it is paid from the retry budget (failures that may have reached the
    # server; not 429s, nor failures before a byte was sent).
    budgeted: bool = False


def make_retrying(
    policy: RetryPolicy, *, random_source: typing.Callable[[], float] = random.random
) -> tenacity.Retrying:
    """A tenacity controller whose strategies read our :class:`Outcome` results."""

    def wait(state: tenacity.RetryCallState) -> float:
        outcome = _outcome(state)
        if outcome.server_wait is not None:
            return outcome.server_wait
        attempt = outcome.tally.throttled if outcome.kind == "throttled" else outcome.tally.failures
        return full_jitter(attempt, base=policy.backoff_base, cap=policy.backoff_max, random=random_source)

    def stop(state: tenacity.RetryCallState) -> bool:
        outcome = _outcome(state)
        tally = outcome.tally
        upcoming = state.upcoming_sleep
        if outcome.kind == "throttled":
            attempts, limit, since, timeout = (
                tally.throttled, policy.throttle_attempts, tally.throttled_since, policy.throttle_timeout,
            )  # fmt: skip
        else:
            attempts, limit, since, timeout = (
                tally.failures, policy.failure_attempts, tally.failing_since, policy.failure_timeout,
            )  # fmt: skip
        left = timeout - (tally.clock() - since) if since is not None else timeout
        if outcome.server_wait is not None and (
            outcome.server_wait > policy.max_server_wait or outcome.server_wait > left
        ):
            tally.too_long = outcome.server_wait
            return True
        return attempts >= limit or upcoming > left

    return tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda outcome: bool(outcome.retry)),
        wait=wait,
        stop=stop,
        # On stop, hand back the last outcome; the engine turns it into our error.
        retry_error_callback=_outcome,
        sleep=_never_sleep,
    )


def _outcome(state: tenacity.RetryCallState) -> Outcome:
    assert state.outcome is not None  # tenacity calls wait/stop only after an attempt
    result = state.outcome.result()
    assert isinstance(result, Outcome)
    return result


def _never_sleep(seconds: float) -> None:  # pragma: no cover - the engine sleeps, not tenacity
    raise RuntimeError("the engine drives sleeping")
