"""Server-told waits read from response headers (ratelimit_client._headers)."""

from __future__ import annotations

import email.utils
import math
import time
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ratelimit_client._headers import ResetFormat, WaitHint, parse_delay, parse_http_date, server_wait

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
Headers = list[tuple[str, str]]


def imf(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


def rfc850(epoch: float) -> str:
    return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(epoch))


def asctime(epoch: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(epoch))


def wait(headers: Headers, *, now: float = NOW, reset_format: ResetFormat = "auto") -> WaitHint | None:
    return server_wait(headers, now=now, reset_format=reset_format)


# --- HTTP-dates -------------------------------------------------------------------------


@pytest.mark.parametrize("form", [imf, rfc850, asctime])
def test_parse_http_date_reads_all_three_forms(form: typing.Callable[[float], str]) -> None:
    assert parse_http_date(form(NOW + 30), now=NOW) == NOW + 30


def test_parse_http_date_examples_from_rfc_9110() -> None:
    expected = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", now=NOW) == expected
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now=NOW) == expected
    assert parse_http_date("Sun Nov  6 08:49:37 1994", now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    ["", "yesterday", "Sun, 06 Nov 1994 08:49:37 PST", "Sun, 32 Nov 1994 08:49:37 GMT", "1994-11-06T08:49:37Z"],
)
def test_parse_http_date_rejects_other_text(value: str) -> None:
    assert parse_http_date(value, now=NOW) is None


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov \u0661\u0669\u0669\u0664 08:49:37 GMT",  # Arabic-Indic digits
        "Sun, 06 Nov \uff11\uff19\uff19\uff14 08:49:37 GMT",  # fullwidth digits
        "Sunday, 06-Nov-\u0669\u0664 08:49:37 GMT",
        "Sun Nov  \u0666 08:49:37 1994",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
    ],
)
def test_parse_http_date_reads_ascii_digits_only(value: str) -> None:
    # HTTP's DIGIT is 0-9: a date in other digits is malformed, not a date to trust.
    assert parse_http_date(value, now=NOW) is None


def test_a_date_in_other_digits_does_not_turn_a_short_wait_into_decades() -> None:
    headers = [("Date", "Thu, 01 Jan \u0661\u0669\u0667\u0660 00:00:00 GMT"), ("Retry-After", imf(NOW + 30))]
    assert wait(headers) == WaitHint(30, "retry-after")  # the malformed Date is ignored


@pytest.mark.parametrize(
    ("two_digits", "year"),
    [("23", 2023), ("73", 2073), ("74", 1974), ("94", 1994), ("00", 2000), ("70", 2070)],
)
def test_a_two_digit_year_is_the_one_within_50_years_of_now(two_digits: str, year: int) -> None:
    # RFC 9110 §5.6.7: a year that would be more than 50 years ahead is the latest past one.
    # NOW is in 2023, so 2073 is the latest year read as ahead and 1974 the earliest.
    parsed = parse_http_date(f"Thursday, 01-Jan-{two_digits} 00:00:00 GMT", now=NOW)
    assert parsed is not None
    assert time.gmtime(parsed).tm_year == year


def test_an_http_date_is_read_whatever_the_case_and_with_a_leap_second() -> None:
    expected = 784111777.0
    assert parse_http_date("sun, 06 nov 1994 08:49:37 gmt", now=NOW) == expected
    assert parse_http_date("Sun, 06 Nov 1994 08:49:60 GMT", now=NOW) == expected + 22  # as :59
    assert parse_http_date("Sun, 31 Jun 1994 08:49:37 GMT", now=NOW) is None  # June has 30 days


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[("0", 0.0), ("30", 30.0), ("1.5", 1.5), (" 7 ", 7.0), ("-1", None), ("1e3", None), ("nan", None), ("", None)],
        # HTTP's DIGIT is ASCII: other scripts' digits (which float() reads) are malformed.
        *[("\u1c55", None), ("\uff15", None), ("3\u0665", None), ("1.\u0665", None)],
    ],
)
def test_parse_delay(value: str, expected: float | None) -> None:
    assert parse_delay(value) == expected


# --- the table --------------------------------------------------------------------------

CASES: list[tuple[str, Headers, ResetFormat, WaitHint | None]] = [
    # Retry-After, delta seconds.
    ("delta", [("Retry-After", "30")], "auto", WaitHint(30, "retry-after")),
    ("zero", [("Retry-After", "0")], "auto", WaitHint(0, "retry-after")),
    ("fractional", [("Retry-After", "1.5")], "auto", WaitHint(1.5, "retry-after")),
    ("padded", [("Retry-After", "  7 ")], "auto", WaitHint(7, "retry-after")),
    ("name case", [("rEtRy-AfTeR", "3")], "auto", WaitHint(3, "retry-after")),
    # Retry-After, HTTP-dates: against now without Date, against Date with it.
    ("imf date", [("Retry-After", imf(NOW + 30))], "auto", WaitHint(30, "retry-after")),
    ("rfc850 date", [("Retry-After", rfc850(NOW + 30))], "auto", WaitHint(30, "retry-after")),
    ("asctime date", [("Retry-After", asctime(NOW + 30))], "auto", WaitHint(30, "retry-after")),
    (
        "imf date vs Date",
        [("Date", imf(NOW + 100)), ("Retry-After", imf(NOW + 130))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    (
        "rfc850 date vs Date",
        [("Date", imf(NOW - 50)), ("Retry-After", rfc850(NOW - 20))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    (
        "asctime date vs Date",
        [("Retry-After", asctime(NOW + 3600)), ("Date", imf(NOW + 3570))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    ("date in the past", [("Retry-After", imf(NOW - 30))], "auto", WaitHint(0, "retry-after")),
    (
        "date before Date",
        [("Date", imf(NOW + 100)), ("Retry-After", imf(NOW + 50))],
        "auto",
        WaitHint(0, "retry-after"),
    ),
    (
        "malformed Date: now",
        [("Date", "soon"), ("Retry-After", imf(NOW + 30))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    # Milliseconds.
    ("retry-after-ms", [("retry-after-ms", "1500")], "auto", WaitHint(1.5, "retry-after-ms")),
    ("x-ms-retry-after-ms", [("x-ms-retry-after-ms", "250")], "auto", WaitHint(0.25, "x-ms-retry-after-ms")),
    # RateLimit, draft -08+ lists: the exhausted policy with the longest reset binds.
    ("-08 one policy", [("RateLimit", '"default";r=0;t=30')], "auto", WaitHint(30, "ratelimit")),
    (
        "-08 several policies",
        [("RateLimit", '"burst";r=0;t=5, "daily";r=0;t=3600, "hourly";r=10;t=7200')],
        "auto",
        WaitHint(3600, "ratelimit"),
    ),
    ("-08 not exhausted", [("RateLimit", '"default";r=4;t=30')], "auto", None),
    ("-08 no reset", [("RateLimit", '"default";r=0')], "auto", None),
    ("-08 bad reset", [("RateLimit", '"default";r=0;t=-3')], "auto", None),
    (
        "-08 repeated lines combine",
        [("RateLimit", '"a";r=0;t=10'), ("RateLimit", '"b";r=0;t=20')],
        "auto",
        WaitHint(20, "ratelimit"),
    ),
    # -07 dictionary.
    ("-07 dictionary", [("RateLimit", "limit=100, remaining=0, reset=30")], "auto", WaitHint(30, "ratelimit")),
    ("-07 not exhausted", [("RateLimit", "limit=100, remaining=9, reset=30")], "auto", None),
    # -06 separate fields.
    (
        "-06 fields",
        [("RateLimit-Limit", "100"), ("RateLimit-Remaining", "0"), ("RateLimit-Reset", "30")],
        "auto",
        WaitHint(30, "ratelimit-reset"),
    ),
    (
        "-06 not exhausted",
        [("RateLimit-Limit", "100"), ("RateLimit-Remaining", "3"), ("RateLimit-Reset", "30")],
        "auto",
        None,
    ),
    ("-06 remaining absent", [("RateLimit-Reset", "30")], "auto", WaitHint(30, "ratelimit-reset")),
    ("-06 remaining malformed", [("RateLimit-Remaining", "none"), ("RateLimit-Reset", "30")], "auto", None),
    # X-RateLimit-Reset under auto: told apart by size.
    ("x delta", [("X-RateLimit-Reset", "30")], "auto", WaitHint(30, "x-ratelimit-reset")),
    ("x epoch", [("X-RateLimit-Reset", str(int(NOW + 30)))], "auto", WaitHint(30, "x-ratelimit-reset")),
    ("x epoch ms", [("X-RateLimit-Reset", str(int((NOW + 30) * 1000)))], "auto", WaitHint(30, "x-ratelimit-reset")),
    ("x epoch past", [("X-RateLimit-Reset", str(int(NOW - 30)))], "auto", WaitHint(0, "x-ratelimit-reset")),
    # An epoch is the server's clock: measured against its Date, so skew does not count.
    (
        "x epoch vs Date, local clock ahead",
        [("Date", imf(NOW - 100)), ("X-RateLimit-Reset", str(int(NOW - 70)))],
        "auto",
        WaitHint(30, "x-ratelimit-reset"),
    ),
    (
        "x epoch ms vs Date, local clock behind",
        [("Date", imf(NOW + 600)), ("X-RateLimit-Reset", str(int((NOW + 630) * 1000)))],
        "auto",
        WaitHint(30, "x-ratelimit-reset"),
    ),
    ("x duration", [("X-RateLimit-Reset", "6m0s")], "auto", WaitHint(360, "x-ratelimit-reset")),
    ("x duration hms", [("X-RateLimit-Reset", "1h2m3.5s")], "auto", WaitHint(3723.5, "x-ratelimit-reset")),
    ("x duration seconds", [("X-RateLimit-Reset", "1.5s")], "auto", WaitHint(1.5, "x-ratelimit-reset")),
    ("x ms is not minutes", [("X-RateLimit-Reset", "500ms")], "auto", None),
    (
        "x remaining 0",
        [("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "30")],
        "auto",
        WaitHint(30, "x-ratelimit-reset"),
    ),
    ("x remaining left", [("X-RateLimit-Remaining", "12"), ("X-RateLimit-Reset", "30")], "auto", None),
    (
        "x repeated: first",
        [("X-RateLimit-Reset", "30"), ("X-RateLimit-Reset", "90")],
        "auto",
        WaitHint(30, "x-ratelimit-reset"),
    ),
    # X-RateLimit-Reset under each explicit format.
    ("epoch", [("X-RateLimit-Reset", str(int(NOW + 30)))], "epoch", WaitHint(30, "x-ratelimit-reset")),
    ("epoch: small is 1970", [("X-RateLimit-Reset", "30")], "epoch", WaitHint(0, "x-ratelimit-reset")),
    ("epoch: no durations", [("X-RateLimit-Reset", "6m0s")], "epoch", None),
    ("epoch_ms", [("X-RateLimit-Reset", str(int((NOW + 30) * 1000)))], "epoch_ms", WaitHint(30, "x-ratelimit-reset")),
    (
        "epoch_ms: seconds are 1970",
        [("X-RateLimit-Reset", str(int(NOW)))],
        "epoch_ms",
        WaitHint(0, "x-ratelimit-reset"),
    ),
    ("epoch_ms: no durations", [("X-RateLimit-Reset", "6m0s")], "epoch_ms", None),
    ("delta", [("X-RateLimit-Reset", "30")], "delta", WaitHint(30, "x-ratelimit-reset")),
    ("delta: trusted", [("X-RateLimit-Reset", "1700000030")], "delta", WaitHint(1700000030, "x-ratelimit-reset")),
    ("delta: duration", [("X-RateLimit-Reset", "6m0s")], "delta", WaitHint(360, "x-ratelimit-reset")),
    # Malformed values are skipped.
    ("negative", [("Retry-After", "-5")], "auto", None),
    ("nan", [("Retry-After", "nan")], "auto", None),
    ("inf", [("Retry-After", "inf")], "auto", None),
    ("exponent", [("Retry-After", "1e3")], "auto", None),
    ("unit", [("Retry-After", "5 s")], "auto", None),
    ("empty", [("Retry-After", "")], "auto", None),
    ("sixteen digits", [("Retry-After", "1" * 16)], "auto", None),
    ("fifteen digits: finite", [("Retry-After", "9" * 15)], "auto", WaitHint(999999999999999, "retry-after")),
    ("megabyte", [("Retry-After", "1" * 1_000_000)], "auto", None),
    ("megabyte date", [("Retry-After", imf(NOW) + " " * 1_000_000)], "auto", None),
    ("negative ms", [("retry-after-ms", "-100")], "auto", None),
    ("x negative", [("X-RateLimit-Reset", "-30")], "auto", None),
    ("x nan", [("X-RateLimit-Reset", "NaN")], "auto", None),
    ("x garbage", [("X-RateLimit-Reset", "soon")], "auto", None),
    # Repeated singletons: a copy is fine, two different values are not trusted.
    ("repeated copy", [("Retry-After", "5"), ("Retry-After", "5")], "auto", WaitHint(5, "retry-after")),
    (
        "repeated date copy",
        [("Retry-After", imf(NOW + 30)), ("Retry-After", imf(NOW + 30))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    ("repeated conflict", [("Retry-After", "5"), ("Retry-After", "10")], "auto", None),
    # A copy too long to read is still a second, different value.
    ("repeated conflict, one overlong", [("Retry-After", "5"), ("Retry-After", "6" + " " * 600)], "auto", None),
    (
        "conflicting Date, one overlong: now",
        [("Date", imf(NOW - 3600)), ("Date", imf(NOW) + " " * 600), ("Retry-After", imf(NOW + 30))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    (
        "conflicting Date: now",
        [("Date", imf(NOW + 100)), ("Date", imf(NOW)), ("Retry-After", imf(NOW + 30))],
        "auto",
        WaitHint(30, "retry-after"),
    ),
    ("nothing", [("Content-Type", "text/plain")], "auto", None),
    ("no headers", [], "auto", None),
]


@pytest.mark.parametrize(("headers", "reset_format", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_server_wait(headers: Headers, reset_format: ResetFormat, expected: WaitHint | None) -> None:
    assert wait(headers, reset_format=reset_format) == expected


# --- precedence -------------------------------------------------------------------------

# Every source at once, each asking for a different wait, in precedence order.
ALL_SOURCES: Headers = [
    ("Retry-After", "1"),
    ("retry-after-ms", "2000"),
    ("x-ms-retry-after-ms", "3000"),
    ("RateLimit", '"p";r=0;t=4'),
    ("RateLimit-Reset", "5"),
    ("X-RateLimit-Reset", "6"),
]


@pytest.mark.parametrize("dropped", range(len(ALL_SOURCES)))
def test_precedence_first_present_source_wins(dropped: int) -> None:
    # With the first `dropped` sources gone, the next one answers.
    name, _ = ALL_SOURCES[dropped]
    assert wait(ALL_SOURCES[dropped:]) == WaitHint(dropped + 1, name.lower())


@pytest.mark.parametrize("broken", range(len(ALL_SOURCES) - 1))
def test_precedence_skips_a_malformed_source(broken: int) -> None:
    headers = [(name, "garbage") if i <= broken else (name, value) for i, (name, value) in enumerate(ALL_SOURCES)]
    name, _ = ALL_SOURCES[broken + 1]
    assert wait(headers) == WaitHint(broken + 2, name.lower())


def test_precedence_does_not_depend_on_header_order() -> None:
    assert wait(list(reversed(ALL_SOURCES))) == WaitHint(1, "retry-after")


def test_a_date_is_measured_against_date_even_when_local_clock_is_far_off() -> None:
    headers = [("Date", imf(NOW)), ("Retry-After", imf(NOW + 30))]
    for local in (NOW - 86400, NOW, NOW + 86400):
        assert wait(headers, now=local) == WaitHint(30, "retry-after")


# --- nothing breaks it ------------------------------------------------------------------

NAMES = [name for name, _ in ALL_SOURCES] + ["Date", "RateLimit-Remaining", "X-RateLimit-Remaining", "RateLimit-Policy"]
VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet='0123456789.,;=-+ "eE:hmsGMTinfa', max_size=40),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.builds(imf, st.floats(0, 4e9)),
    st.builds(rfc850, st.floats(0, 4e9)),
    st.builds(asctime, st.floats(0, 4e9)),
    st.text(max_size=5).map(lambda s: s * 200),
)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8),
    now=st.floats(0, 4e9),
    reset_format=st.sampled_from(["auto", "epoch", "epoch_ms", "delta"]),
)
def test_any_text_never_raises_nor_asks_for_a_negative_or_non_finite_wait(
    headers: Headers, now: float, reset_format: ResetFormat
) -> None:
    hint = wait(headers, now=now, reset_format=reset_format)
    if hint is not None:
        assert math.isfinite(hint.wait)
        assert hint.wait >= 0
        assert hint.source in {name.lower() for name in NAMES}
