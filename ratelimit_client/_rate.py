"""Rates, tiers and the pacing a client uses for a server's quota. Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import math
import re
import typing

from ._exceptions import ConfigError

__all__ = ["DEFAULT_TIERS", "MAX_BURST", "Pacing", "Rate", "check_burst", "pacing_for", "parse_rate"]

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip

# "50/minute", "200 / min", "3/5s", "1.5/2.5 seconds", "10 per hour"
_RATE_RE = re.compile(
    r"\s*(?P<n>\d+(?:\.\d+)?)\s*(?:/|\s+per\s+)\s*(?P<k>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*",
    re.IGNORECASE,
)
_RATE_FORMS = "'N/unit' or 'N/Kunit' such as '50/minute', '200/min', '50/second', '3/5s'"
# No quota anyone means has a window, or a gap between requests, of more than about 31
# years; and past some bound the values derived from them (the pacing doubles both, a
# bucket multiplies the interval by the burst) would overflow to inf: no limit at all.
_MAX_SECONDS = 1e9
MAX_BURST = 1_000_000  # requests at once: a sane bound, far above any real burst


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``per_seconds``; ``Rate(50, 60)`` is 50 a minute."""

    requests: float
    per_seconds: float

    def __post_init__(self) -> None:
        for name in ("requests", "per_seconds"):
            value = getattr(self, name)
            if not _positive_float(value):
                raise ConfigError(f"rate.{name}", value, "a positive finite number")
        # Each ratio must be a float too: a bucket whose interval is inf admits everything.
        if not (_positive_float(self.interval) and _positive_float(self.per_second)):
            raise ConfigError(
                "rate.requests",
                self.requests,
                f"per_seconds/requests and requests/per_seconds both finite and above 0 "
                f"(per_seconds is {self.per_seconds:g})",
            )

    @property
    def interval(self) -> float:
        """Seconds between two requests at this rate (GCRA's emission interval)."""
        return self.per_seconds / self.requests

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds

    def __str__(self) -> str:
        return f"{self.requests:g}/{self.per_seconds:g}s"


def _positive_float(value: object) -> bool:
    # bool is an int, a str would reach math.isfinite as a TypeError, and an int too
    # large for a float as an OverflowError.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False


def parse_rate(value: str | Rate, *, field: str = "rate") -> Rate:
    """Parse ``"50/minute"``-style text into a :class:`Rate`, or check a given one.

    ``field`` names it in errors. A window or an interval between requests longer than
    1,000,000,000 seconds (about 31 years) is refused.
    """
    rate = value if isinstance(value, Rate) else _parse_text(value, field)
    if rate.per_seconds > _MAX_SECONDS or rate.interval > _MAX_SECONDS:
        allowed = f"a window and an interval between requests of at most {_MAX_SECONDS:,.0f} seconds (about 31 years)"
        raise ConfigError(field, value, allowed)
    return rate


def _parse_text(value: object, field: str) -> Rate:
    if not isinstance(value, str) or len(value) > 64:
        raise ConfigError(field, value, _RATE_FORMS)
    match = _RATE_RE.fullmatch(value)
    if match is None:
        raise ConfigError(field, value, _RATE_FORMS)
    unit = _UNITS.get(match["unit"].lower())
    if unit is None:
        raise ConfigError(field, value, f"a unit among {', '.join(sorted(_UNITS))}")
    multiple = float(match["k"]) if match["k"] else 1.0
    try:
        return Rate(float(match["n"]), multiple * unit)
    except ConfigError:
        raise ConfigError(field, value, f"positive numbers in {_RATE_FORMS}") from None


DEFAULT_TIERS: typing.Mapping[str, Rate] = {
    "free": Rate(50, 60),
    "paid": Rate(200, 60),
}

ServerCounting = typing.Literal["unknown", "token_bucket"]


@dataclasses.dataclass(frozen=True, slots=True)
class Pacing:
    """What the client's bucket enforces: a rate and a burst (requests that may go at once)."""

    rate: Rate
    burst: int


def pacing_for(quota: Rate, *, burst: int | None = None, server: ServerCounting = "unknown") -> Pacing:
    """The pacing that stays inside ``quota`` whatever the server counts with.

    A server counting a sliding log of ``R`` per window ``W`` rejects a client whose
    burst plus ``rate·W`` exceeds ``R``, which a client at burst ``R`` and rate ``R/W``
    does. Burst ``b`` at ``(R-b)/W`` never puts more than ``R`` requests in any window,
    with a whole interval of slack for network jitter, so it is safe against fixed
    windows, sliding logs and token buckets alike; the default burst is 1, which keeps
    the most of the quota. When the server is known to be a token bucket the full rate
    is safe.
    """
    if server not in ("unknown", "token_bucket"):
        raise ConfigError("server_counting", server, "'unknown' or 'token_bucket'")
    burst = check_burst(1 if burst is None else burst)
    if server == "token_bucket":
        return Pacing(quota, burst)
    if quota.requests - burst <= 0:
        # Nothing to spare: halve the rate so jitter cannot put two in one window.
        return Pacing(Rate(quota.requests, quota.per_seconds * 2), 1)
    return Pacing(Rate(quota.requests - burst, quota.per_seconds), burst)


def check_burst(burst: object, *, field: str = "burst") -> int:
    """``burst`` if it is a whole number of requests from 1 to :data:`MAX_BURST`."""
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST:
        raise ConfigError(field, burst, f"an integer from 1 to {MAX_BURST}")
    return burst
