"""How long a server asks us to wait, read from response headers. Pure: no I/O, no clock.

Precedence, first usable wins:

1. ``Retry-After`` (delta seconds, or an HTTP-date in any of the three forms, measured
   against the response's ``Date`` when present), then ``retry-after-ms`` /
   ``x-ms-retry-after-ms`` (milliseconds);
2. the IETF ``RateLimit`` fields: draft -08+ lists (``"p";r=0;t=30``), the -07
   dictionary (``limit=…, remaining=…, reset=…``) and -06 ``RateLimit-Reset`` (``t`` and
   ``reset`` are always delta seconds), read only when the quota is exhausted;
3. ``X-RateLimit-Reset`` (epoch seconds, epoch milliseconds or delta seconds: ``auto``
   tells them apart by size; an epoch is measured against ``Date`` when present), read
   only when ``X-RateLimit-Remaining`` is 0 or absent.

A malformed, negative or non-finite value is skipped, never trusted; a date in the
past means "now". Values are not capped here: the retry policy refuses waits above its
maximum instead of sleeping them.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
import typing

__all__ = ["ResetFormat", "WaitHint", "parse_delay", "parse_http_date", "server_wait"]

ResetFormat = typing.Literal["auto", "epoch", "epoch_ms", "delta"]

_MAX_FIELD = 512  # longer field values are hostile or broken; skip them unparsed
# re.ASCII: HTTP's DIGIT is 0-9 only; float() would read other scripts' digits (U+1C55, U+FF15).
_NUMBER = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,9})?)\s*$", re.ASCII)
_DURATION = re.compile(r"^(?:(\d{1,9})h)?(?:(\d{1,9})m(?!s))?(?:(\d{1,9}(?:\.\d{1,9})?)s)?$", re.ASCII)
# The three HTTP-date forms of RFC 9110 §5.6.7, matched here rather than by strptime,
# whose %Y and %d read any script's digits and whose %a and %b follow the C locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_DAY = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAY = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_TIME = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
_HTTP_DATES = tuple(
    re.compile(pattern, re.ASCII | re.IGNORECASE)
    for pattern in (
        rf"(?:{_DAY}), (?P<day>\d\d) (?P<month>{_MONTH}) (?P<year>\d{{4}}) {_TIME} GMT",  # IMF-fixdate
        rf"(?:{_LONG_DAY}), (?P<day>\d\d)-(?P<month>{_MONTH})-(?P<yy>\d\d) {_TIME} GMT",  # obsolete RFC 850
        rf"(?:{_DAY}) (?P<month>{_MONTH}) (?P<day>\d{{1,2}}) {_TIME} (?P<year>\d{{4}})",  # obsolete asctime
    )
)
_SECONDS_PER_YEAR = 31_556_952  # the Gregorian mean
# Epoch readings below this are deltas (about 2001-09-09 in seconds).
_EPOCH_SECONDS_MIN = 1e9
_EPOCH_MS_MIN = 1e12
# Fields holding one value: HTTP-dates contain a comma, so repeats cannot be joined.
_SINGLETONS = frozenset({"date", "retry-after", "retry-after-ms", "x-ms-retry-after-ms"})


@dataclasses.dataclass(frozen=True, slots=True)
class WaitHint:
    """The server asks for ``wait`` seconds; ``source`` names the header it came from."""

    wait: float
    source: str


def parse_delay(value: str) -> float | None:
    """A non-negative decimal number of seconds, or None."""
    if len(value) > _MAX_FIELD:
        return None
    match = _NUMBER.match(value)
    return float(match[1]) if match else None


def parse_http_date(value: str, *, now: float) -> float | None:
    """An HTTP-date (any of RFC 9110's three forms) as epoch seconds, or None.

    ``now`` (epoch seconds) places a two-digit year: within 50 years of it, as RFC 9110
    asks (a year that would be more than 50 years ahead is the latest past one).
    """
    value = " ".join(value.split())
    if len(value) > 64:
        return None
    for pattern in _HTTP_DATES:
        match = pattern.fullmatch(value)
        if match is not None:
            break
    else:
        return None
    fields = match.groupdict()
    if fields.get("yy") is not None:
        earliest = 1970 + int(now // _SECONDS_PER_YEAR) - 49
        year = earliest + (int(fields["yy"]) - earliest) % 100
    else:
        year = int(fields["year"])
    try:
        parsed = datetime.datetime(
            year,
            _MONTHS.index(fields["month"].title()) + 1,
            int(fields["day"]),
            int(fields["hour"]),
            int(fields["minute"]),
            min(int(fields["second"]), 59),  # a leap second is the second before it
            tzinfo=datetime.timezone.utc,
        )
    except (ValueError, OverflowError):  # day 31 of a 30-day month, hour 24, year 0 or 10000
        return None
    return parsed.timestamp()


def _duration(value: str) -> float | None:
    # Go-style durations such as "6m0s" or "1.5s", seen in X-RateLimit-Reset.
    match = _DURATION.match(value.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _retry_after(value: str, now: float, server_now: float | None) -> float | None:
    delay = parse_delay(value)
    if delay is not None:
        return delay
    when = parse_http_date(value, now=now)
    if when is None:
        return None
    # Measure against the server's own clock when it sent one, so skew does not count.
    return max(0.0, when - (now if server_now is None else server_now))


def _ratelimit_list(value: str) -> float | None:
    # Draft -08+: a list of items such as `"default";r=0;t=30`; the exhausted
    # item with the longest reset binds.
    waits: list[float] = []
    for item in value.split(","):
        params = dict(_param(p) for p in item.split(";")[1:])
        remaining, reset = params.get("r"), params.get("t")
        if remaining is not None and reset is not None and remaining <= 0:
            waits.append(reset)
    return max(waits) if waits else None


def _ratelimit_dict(value: str) -> float | None:
    # Draft -07: `limit=100, remaining=0, reset=30`.
    params = dict(_param(p) for p in value.split(","))
    remaining, reset = params.get("remaining"), params.get("reset")
    if remaining is not None and reset is not None and remaining <= 0:
        return reset
    return None


def _param(text: str) -> tuple[str, float | None]:
    name, _, raw = text.partition("=")
    return name.strip().lower(), parse_delay(raw.strip().strip('"'))


def _reset(value: str, now: float, fmt: ResetFormat) -> float | None:
    number = parse_delay(value)
    if number is None:
        return _duration(value) if fmt in ("auto", "delta") else None
    if fmt == "epoch" or (fmt == "auto" and _EPOCH_SECONDS_MIN <= number < _EPOCH_MS_MIN):
        return max(0.0, number - now)
    if fmt == "epoch_ms" or (fmt == "auto" and number >= _EPOCH_MS_MIN):
        return max(0.0, number / 1000 - now)
    return number


def server_wait(
    headers: typing.Iterable[tuple[str, str]],
    *,
    now: float,
    reset_format: ResetFormat = "auto",
) -> WaitHint | None:
    """The wait a response's headers ask for, or None when they ask for none usable.

    ``headers`` are (name, value) pairs; ``now`` is the local time in epoch seconds.
    """
    fields: dict[str, str] = {}
    for name, raw in headers:
        key = name.lower()
        value = raw
        if len(raw) > _MAX_FIELD:
            if key not in _SINGLETONS:
                continue
            value = ""  # unread, but still a second value of a singleton: see below
        if key not in fields:
            fields[key] = value
        elif key in _SINGLETONS:
            # A singleton sent twice: a copy (proxies do that) is fine; two different
            # values are ambiguous, so neither is trusted.
            fields[key] = value if fields[key] == value else ""
        else:
            # Repeated fields combine as a list (RFC 9110 §5.3).
            fields[key] = f"{fields[key]}, {value}"

    server_now = parse_http_date(fields["date"], now=now) if "date" in fields else None
    readers: tuple[tuple[str, typing.Callable[[str], float | None]], ...] = (
        ("retry-after", lambda v: _retry_after(v, now, server_now)),
        ("retry-after-ms", lambda v: _scaled(v, 0.001)),
        ("x-ms-retry-after-ms", lambda v: _scaled(v, 0.001)),
        ("ratelimit", lambda v: _ratelimit_list(v) if ";" in v else _ratelimit_dict(v)),
        ("ratelimit-reset", lambda v: _exhausted(fields.get("ratelimit-remaining"), v)),
        (
            "x-ratelimit-reset",
            lambda v: _exhausted(
                fields.get("x-ratelimit-remaining"), v, lambda r: _reset(r, server_now or now, reset_format)
            ),
        ),
    )
    for name, read in readers:
        if name in fields:
            wait = read(fields[name])
            if wait is not None and math.isfinite(wait) and wait >= 0:
                return WaitHint(wait, name)
    return None


def _scaled(value: str, factor: float) -> float | None:
    delay = parse_delay(value)
    return None if delay is None else delay * factor


def _exhausted(
    remaining: str | None,
    value: str,
    read: typing.Callable[[str], float | None] = parse_delay,
) -> float | None:
    # A reset is a wait only when nothing remains; an absent count is taken as none left
    # (the field came with a refusal).
    if remaining is not None:
        left = parse_delay(remaining.split(",")[0])
        if left is None or left > 0:
            return None
    return read(value.split(",", maxsplit=1)[0].strip())
