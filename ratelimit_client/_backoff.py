"""Exponential backoff with full jitter, and the retry budget. Pure: clock and randomness are passed in."""

from __future__ import annotations

import dataclasses
import typing

__all__ = ["RetryBudget", "full_jitter"]

_MAX_EXPONENT = 60  # 2**60 exceeds any sane cap; larger exponents would only overflow
_EPSILON = 1e-9  # deposits of a decimal ratio (0.2) add up a few ulps short of whole retries


def full_jitter(attempt: int, *, base: float, cap: float, random: typing.Callable[[], float]) -> float:
    """A wait drawn uniformly from ``[0, min(cap, base·2^(attempt-1)))``.

    The draw stays random at the cap, so clients that failed together do not retry
    together ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt - 1, 0), _MAX_EXPONENT))
    return ceiling * random()


@dataclasses.dataclass(slots=True)
class RetryBudget:
    """Retries allowed as a share of requests, so a failing host cannot triple the traffic.

    Each request deposits ``ratio`` of a retry; each retry withdraws one. A floor of
    ``min_per_second`` retries, up to ``min_per_second * 10`` saved, keeps a quiet client
    able to retry at all (Finagle's RetryBudget, simplified). Not thread-safe: the caller
    holds a lock.
    """

    ratio: float = 0.2
    # Finagle's default floor: at the paces rate limits allow, a client that retries more
    # than ten times a second is already in a storm.
    min_per_second: float = 10.0
    _balance: float = dataclasses.field(default=0.0, init=False)
    _floor: float = dataclasses.field(default=0.0, init=False)
    _floor_at: float | None = dataclasses.field(default=None, init=False)

    def deposit(self, requests: int = 1) -> None:
        """Pay in for ``requests`` requests."""
        self._balance = min(self._balance + self.ratio * requests, 1000.0)

    def withdraw(self, now: float) -> bool:
        """Take one retry if the budget has one; ``now`` is a monotonic time."""
        cap = self.min_per_second * 10
        if self._floor_at is None:
            self._floor = cap
        else:
            self._floor = min(cap, self._floor + max(0.0, now - self._floor_at) * self.min_per_second)
        self._floor_at = now
        if self._balance >= 1.0 - _EPSILON:
            self._balance -= 1.0
            return True
        if self._floor >= 1.0 - _EPSILON:
            self._floor -= 1.0
            return True
        return False
