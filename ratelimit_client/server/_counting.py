"""How a server counts requests against a quota, one key at a time. Pure: the clock is passed in.

Three ways real APIs count, from the most to the least forgiving of bursts:

- ``gcra``: a token bucket of ``R`` tokens refilled at ``R/W`` (GCRA, the library's own
  :mod:`ratelimit_client._gcra` with burst ``R``);
- ``fixed_window``: at most ``R`` per calendar window ``[kW, (k+1)W)``;
- ``sliding_log``: at most ``R`` in any window of ``W`` seconds ending now (the strictest).

With ``count_rejected`` a refused attempt is charged too, as some APIs do: a client that
keeps hammering stays locked out.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import typing

from .. import _gcra
from .._rate import Rate

__all__ = ["MODES", "Counter", "Mode", "Verdict", "new_counter"]

Mode = typing.Literal["gcra", "fixed_window", "sliding_log"]
MODES: tuple[Mode, ...] = ("gcra", "fixed_window", "sliding_log")


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """One key's answer: admitted or not, and what the rate-limit headers should say.

    ``retry_after`` is the seconds until a request would be admitted (0 when admitted);
    ``remaining`` the requests left after this one; ``reset`` the seconds until the
    quota is whole again.
    """

    allowed: bool
    retry_after: float
    limit: int
    remaining: int
    reset: float
    window: float


def _whole(rate: Rate) -> int:
    # Window counters need a whole number of requests; never fewer than one.
    return max(1, math.floor(rate.requests))


class Counter(typing.Protocol):
    """One key's state under one counting mode."""

    def check(self, rate: Rate, now: float) -> Verdict:
        """Would a request at ``now`` be admitted? Changes nothing."""
        ...

    def record(self, rate: Rate, now: float, *, admitted: bool) -> None:
        """Charge a request at ``now`` (a refused one only under ``count_rejected``)."""
        ...

    def idle(self, rate: Rate, now: float) -> bool:
        """True when forgetting this key would change no decision."""
        ...


class _Gcra:
    __slots__ = ("tat",)

    def __init__(self) -> None:
        self.tat = -math.inf

    @staticmethod
    def _bucket(rate: Rate) -> _gcra.Bucket:
        return _gcra.Bucket(rate.interval, _whole(rate))

    def check(self, rate: Rate, now: float) -> Verdict:
        bucket = self._bucket(rate)
        state = None if self.tat == -math.inf else _gcra.KeyState(self.tat)
        decision = _gcra.reserve([state], [bucket], now, max_wait=0.0)
        written = decision.states[0].tat if decision.states else max(self.tat, now) + bucket.interval
        remaining = max(0, math.floor((now + bucket.tolerance - written) / bucket.interval + 1e-9))
        return Verdict(
            allowed=decision.granted,
            retry_after=0.0 if decision.granted else decision.wait,
            limit=bucket.burst,
            remaining=remaining if decision.granted else 0,
            reset=max(0.0, (written if decision.granted else max(self.tat, now)) - now),
            window=rate.per_seconds,
        )

    def record(self, rate: Rate, now: float, *, admitted: bool) -> None:
        bucket = self._bucket(rate)
        charged = max(self.tat, now) + bucket.interval
        # A refused attempt may push tat past the tolerance; cap it one window further so
        # a hammering client is locked out for a bounded time, not forever.
        self.tat = charged if admitted else min(charged, now + bucket.tolerance + rate.per_seconds)

    def idle(self, rate: Rate, now: float) -> bool:
        return self.tat <= now


class _FixedWindow:
    __slots__ = ("count", "start")

    def __init__(self) -> None:
        self.start = -math.inf
        self.count = 0

    def _roll(self, rate: Rate, now: float) -> tuple[float, int]:
        start = math.floor(now / rate.per_seconds) * rate.per_seconds
        return (start, 0) if start != self.start else (self.start, self.count)

    def check(self, rate: Rate, now: float) -> Verdict:
        start, count = self._roll(rate, now)
        limit = _whole(rate)
        end = start + rate.per_seconds
        allowed = count < limit
        return Verdict(
            allowed=allowed,
            retry_after=0.0 if allowed else end - now,
            limit=limit,
            remaining=max(0, limit - count - 1) if allowed else 0,
            reset=end - now,
            window=rate.per_seconds,
        )

    def record(self, rate: Rate, now: float, *, admitted: bool) -> None:
        self.start, self.count = self._roll(rate, now)
        self.count += 1

    def idle(self, rate: Rate, now: float) -> bool:
        return now >= self.start + rate.per_seconds


class _SlidingLog:
    __slots__ = ("log",)

    def __init__(self) -> None:
        # Only the latest R times can decide anything, so the log never holds more.
        self.log: collections.deque[float] = collections.deque(maxlen=1)

    def _live(self, rate: Rate, now: float) -> collections.deque[float]:
        limit = _whole(rate)
        if self.log.maxlen != limit:
            self.log = collections.deque(self.log, maxlen=limit)
        while self.log and self.log[0] <= now - rate.per_seconds:
            self.log.popleft()
        return self.log

    def check(self, rate: Rate, now: float) -> Verdict:
        log = self._live(rate, now)
        limit = _whole(rate)
        allowed = len(log) < limit
        oldest = log[0] if log else now
        return Verdict(
            allowed=allowed,
            retry_after=0.0 if allowed else oldest + rate.per_seconds - now,
            limit=limit,
            remaining=max(0, limit - len(log) - 1) if allowed else 0,
            reset=rate.per_seconds if allowed else log[-1] + rate.per_seconds - now,
            window=rate.per_seconds,
        )

    def record(self, rate: Rate, now: float, *, admitted: bool) -> None:
        self._live(rate, now).append(now)

    def idle(self, rate: Rate, now: float) -> bool:
        return not self._live(rate, now)


_COUNTERS: dict[str, typing.Callable[[], Counter]] = {
    "gcra": _Gcra,
    "fixed_window": _FixedWindow,
    "sliding_log": _SlidingLog,
}


def new_counter(mode: Mode) -> Counter:
    """A fresh key's state under ``mode``."""
    return _COUNTERS[mode]()
