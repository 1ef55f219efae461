"""Rates, tiers and the safe pacing for a quota (ratelimit_client._rate)."""

from __future__ import annotations

import math

import pytest

from ratelimit_client import DEFAULT_TIERS, ConfigError, Rate, parse_rate
from ratelimit_client._rate import Pacing, ServerCounting, pacing_for


@pytest.mark.parametrize(
    ("text", "requests", "per_seconds"),
    [
        ("50/minute", 50, 60),
        ("200/min", 200, 60),
        ("50/second", 50, 1),
        ("3/5s", 3, 5),
        ("10 per hour", 10, 3600),
        (" 50 / Minute ", 50, 60),
        ("1.5/2.5 seconds", 1.5, 2.5),
        ("100/ms", 100, 0.001),
        ("7/2h", 7, 7200),
        ("5/d", 5, 86400),
        ("5 PER DAY", 5, 86400),
        ("4/sec", 4, 1),
        ("60/hr", 60, 3600),
    ],
)
def test_parse_rate_accepts(text: str, requests: float, per_seconds: float) -> None:
    assert parse_rate(text) == Rate(requests, per_seconds)


def test_parse_rate_passes_a_rate_through() -> None:
    rate = Rate(50, 60)
    assert parse_rate(rate) is rate


@pytest.mark.parametrize(
    "value",
    [
        "",
        "50",
        "/min",
        "50/",
        "fifty/min",
        "50/fortnight",
        "0/min",
        "50/0s",
        "-5/min",
        "nan/min",
        "inf/min",
        "1e3/min",
        "50//min",
        "50/min/h",
        "50 per",
        "50 perminute",
        "5" * 70 + "/min",
        50,
        None,
        ["50/min"],
    ],
)
def test_parse_rate_rejects_with_field_and_value(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate(value, field="tiers.team")  # type: ignore[arg-type]
    assert info.value.field == "tiers.team"
    assert info.value.value == value
    assert str(info.value).startswith(f"invalid tiers.team: {value!r} (expected ")


def test_parse_rate_names_the_units_when_the_unit_is_unknown() -> None:
    with pytest.raises(ConfigError, match=r"a unit among .*minute"):
        parse_rate("50/fortnight")


@pytest.mark.parametrize(
    ("requests", "per_seconds", "field"),
    [
        (0, 60, "rate.requests"),
        (-1, 60, "rate.requests"),
        (math.nan, 60, "rate.requests"),
        (math.inf, 60, "rate.requests"),
        ("50", 60, "rate.requests"),
        (True, 60, "rate.requests"),
        (50, 0, "rate.per_seconds"),
        (50, -60, "rate.per_seconds"),
        (50, math.inf, "rate.per_seconds"),
        (50, "60", "rate.per_seconds"),
    ],
)
def test_rate_rejects_non_positive_or_non_numbers(requests: object, per_seconds: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Rate(requests, per_seconds)  # type: ignore[arg-type]
    assert info.value.field == field


def test_rate_interval_and_str() -> None:
    rate = Rate(50, 60)
    assert rate.interval == pytest.approx(1.2)
    assert rate.per_second == pytest.approx(50 / 60)
    assert str(rate) == "50/60s"
    assert parse_rate(str(Rate(1.5, 2.5))) == Rate(1.5, 2.5)


def test_default_tiers() -> None:
    assert dict(DEFAULT_TIERS) == {"free": Rate(50, 60), "paid": Rate(200, 60)}


def test_pacing_default_is_burst_one_just_under_the_quota() -> None:
    assert pacing_for(Rate(50, 60)) == Pacing(Rate(49, 60), 1)
    assert pacing_for(Rate(200, 60)) == Pacing(Rate(199, 60), 1)


def test_pacing_for_a_token_bucket_server_takes_the_full_quota() -> None:
    assert pacing_for(Rate(50, 60), server="token_bucket") == Pacing(Rate(50, 60), 1)
    assert pacing_for(Rate(50, 60), burst=10, server="token_bucket") == Pacing(Rate(50, 60), 10)


@pytest.mark.parametrize("burst", [1, 2, 5, 49])
def test_pacing_explicit_burst_gives_up_that_much_rate(burst: int) -> None:
    assert pacing_for(Rate(50, 60), burst=burst) == Pacing(Rate(50 - burst, 60), burst)


@pytest.mark.parametrize(("requests", "burst"), [(50, 50), (50, 80), (1, 1)])
def test_pacing_with_nothing_to_spare_halves_the_rate(requests: int, burst: int) -> None:
    # burst + rate·W must stay ≤ R: with R - b ≤ 0 the rate is halved at burst 1.
    assert pacing_for(Rate(requests, 60), burst=burst) == Pacing(Rate(requests, 120), 1)


@pytest.mark.parametrize("requests", [2, 3, 50, 200, 1000])
@pytest.mark.parametrize("burst", [1, 2, 10])
def test_default_pacing_never_exceeds_the_quota_in_a_window(requests: int, burst: int) -> None:
    # GCRA admits at most burst + floor(W / interval) in any closed window of length W.
    pacing = pacing_for(Rate(requests, 60), burst=burst)
    most = pacing.burst + math.floor(60 / pacing.rate.interval + 1e-9)
    assert most <= requests


@pytest.mark.parametrize("burst", [0, -1, True, 1.5])
@pytest.mark.parametrize("server", ["unknown", "token_bucket"])
def test_pacing_rejects_bad_bursts(burst: object, server: str) -> None:
    with pytest.raises(ConfigError) as info:
        pacing_for(Rate(50, 60), burst=burst, server=server)  # type: ignore[arg-type]
    assert info.value.field == "burst"


def test_pacing_rejects_unknown_server_counting() -> None:
    with pytest.raises(ConfigError) as info:
        pacing_for(Rate(50, 60), server="sliding_log")  # type: ignore[arg-type]
    assert info.value.field == "server_counting"
    assert info.value.value == "sliding_log"


# --- rates and bursts no float can carry ----------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "per_seconds", "field"),
    [
        pytest.param(10**400, 60, "rate.requests", id="requests-too-big-for-a-float"),
        pytest.param(50, 10**400, "rate.per_seconds", id="per_seconds-too-big-for-a-float"),
        pytest.param(1e-300, 1e10, "rate.requests", id="interval-overflows"),  # no limit at all
        pytest.param(5e-324, 1, "rate.requests", id="interval-overflows-subnormal"),
        pytest.param(1e308, 1e-3, "rate.requests", id="rate-overflows"),
    ],
)
def test_rate_rejects_numbers_whose_interval_or_rate_is_not_a_float(
    requests: float, per_seconds: float, field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Rate(requests, per_seconds)
    assert info.value.field == field


@pytest.mark.parametrize(
    "value",
    [Rate(1, 1e308), Rate(1, 2e9), Rate(1e-300, 1e7), Rate(0.5, 1e9), "1/99999999999d", "1/40000 days"],
)
def test_parse_rate_rejects_a_window_or_interval_beyond_the_bound(value: str | Rate) -> None:
    with pytest.raises(ConfigError) as info:
        parse_rate(value, field="limit.rate")
    assert info.value.field == "limit.rate"
    assert info.value.value == value  # the value given, not one derived from it
    assert "at most 1,000,000,000 seconds (about 31 years)" in str(info.value)


@pytest.mark.parametrize("server", ["unknown", "token_bucket"])
def test_the_rate_bound_keeps_every_pacing_finite(server: ServerCounting) -> None:
    with pytest.raises(ConfigError):
        parse_rate(Rate(1, math.nextafter(1e9, math.inf)))
    # The pacing may double the window, and a bucket multiplies the interval by the burst.
    pacing = pacing_for(parse_rate(Rate(1, 1e9)), burst=1_000_000, server=server)
    assert math.isfinite(pacing.rate.per_seconds)
    assert math.isfinite(pacing.rate.interval * pacing.burst)


@pytest.mark.parametrize("burst", [pytest.param(1_000_001, id="bound+1"), pytest.param(10**400, id="10**400")])
@pytest.mark.parametrize("server", ["unknown", "token_bucket"])
def test_pacing_rejects_bursts_beyond_the_bound(burst: int, server: ServerCounting) -> None:
    with pytest.raises(ConfigError, match=r"expected an integer from 1 to 1000000\)") as info:
        pacing_for(Rate(50, 60), burst=burst, server=server)
    assert info.value.field == "burst"
