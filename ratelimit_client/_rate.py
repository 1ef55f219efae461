"""Rates, tiers and the pacing a client uses for a server's quota. Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import math
import re
import typing

from ._exceptions import ConfigError

__all__ = ["DEFAULT_TIERS", "Pacing", "Rate", "pacing_for", "parse_rate"]

_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip

# "50/minute", "200 / min", "3/5s", "1.5/2.5 seconds", "10 per hour"
_RATE_RE = re.compile(
    r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?:/|\s+per\s+)\s*(?P<k>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)\s*$",
    re.IGNORECASE,
)
_RATE_FORMS = "'N/unit' or 'N/Kunit' such as '50/minute', '200/min', '50/second', '3/5s'"


@dataclasses.dataclass(frozen=True, slots=True)
class Rate:
    """``requests`` per ``per_seconds``; ``Rate(50, 60)`` is 50 a minute."""

    requests: float
    per_seconds: float

    def __post_init__(self) -> None:
        for name in ("requests", "per_seconds"):
            value = getattr(self, name)
            # bool is an int, and a str would reach math.isfinite as a TypeError.
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value > 0)
            ):
                raise ConfigError(f"rate.{name}", value, "a positive finite number")

    @property
    def interval(self) -> float:
        """Seconds between two requests at this rate (GCRA's emission interval)."""
        return self.per_seconds / self.requests

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds

    def __str__(self) -> str:
        return f"{self.requests:g}/{self.per_seconds:g}s"


def parse_rate(value: str | Rate, *, field: str = "rate") -> Rate:
    """Parse ``"50/minute"``-style text into a :class:`Rate`; ``field`` names it in errors."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise ConfigError(field, value, _RATE_FORMS)
    match = _RATE_RE.match(value)
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
    burst = 1 if burst is None else burst
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ConfigError("burst", burst, "an integer of at least 1")
    if server == "token_bucket":
        return Pacing(quota, burst)
    if quota.requests - burst <= 0:
        # Nothing to spare: halve the rate so jitter cannot put two in one window.
        return Pacing(Rate(quota.requests, quota.per_seconds * 2), 1)
    return Pacing(Rate(quota.requests - burst, quota.per_seconds), burst)
