# ruff: noqa: PT017  (inputs either fail with a ConfigError, checked here, or parse)
"""Fuzzing every parser that reads server- or user-controlled text.

Each property holds for any input: no crash (only ``ConfigError`` for user input), no hang,
and no wait beyond the policy's cap. The suite runs a few hundred inputs per parser; the
long run is the same tests with more examples::

    RATELIMIT_CLIENT_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py --hypothesis-show-statistics -p no:randomly
"""

from __future__ import annotations

import math
import os
import pathlib
import tempfile

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ratelimit_client import (
    ConfigError,
    MemoryBackend,
    RateLimited,
    RateLimitTransport,
    RetryPolicy,
    ServerWaitTooLong,
    load_settings,
    parse_rate,
)
from ratelimit_client._adaptive import observe
from ratelimit_client._backends import check_url
from ratelimit_client._headers import server_wait

EXAMPLES = int(os.environ.get("RATELIMIT_CLIENT_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RATE_HEADERS = [
    "Retry-After", "retry-after-ms", "x-ms-retry-after-ms", "RateLimit", "RateLimit-Policy",
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-RateLimit-Limit",
    "X-RateLimit-Remaining", "X-RateLimit-Reset", "Date",
]  # fmt: skip

# Text that looks like what servers send, mixed with anything at all.
header_text = st.one_of(
    st.text(max_size=300),
    st.from_regex(r"-?\d{0,20}(\.\d{0,12})?(e-?\d{1,4})?", fullmatch=True),
    st.from_regex(r'("?\w{0,8}"?;(q|w|r|t)=-?\d{0,12}(\.\d{0,3})?,? ?){1,4}', fullmatch=True),
    st.from_regex(r"(Mon|Sun), \d{1,2} (Jan|Nov) \d{1,5} \d{2}:\d{2}:\d{2} GMT", fullmatch=True),
    st.from_regex(r"\d{0,4}h?\d{0,4}m?\d{0,4}(\.\d{0,3})?s?", fullmatch=True),
)
headers = st.lists(st.tuples(st.sampled_from(RATE_HEADERS), header_text), max_size=6)
NOW = 1_700_000_000.0


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.from_regex(r"\s*\d{0,6}(\.\d{0,4})?\s*(/|per)\s*\d{0,4}\w{0,8}\s*")))
def test_rate_parser(text: str) -> None:
    try:
        rate = parse_rate(text)
    except ConfigError as error:
        assert error.field == "rate"
        return
    assert rate.requests > 0
    assert rate.per_seconds > 0
    assert math.isfinite(rate.interval)


@FUZZ
@given(text=st.one_of(st.text(max_size=80), st.from_regex(r"[a-z+]{0,10}://[\w.:/@-]{0,30}", fullmatch=True)))
def test_backend_url_parser(text: str) -> None:
    try:
        scheme = check_url(text)
    except ConfigError as error:
        assert error.field == "backend"
        return
    assert text.lower().startswith(scheme)


@FUZZ
@given(fields=headers)
def test_server_wait_parser(fields: list[tuple[str, str]]) -> None:
    hint = server_wait(fields, now=NOW)
    assert hint is None or (math.isfinite(hint.wait) and hint.wait >= 0)


@FUZZ
@given(fields=headers, status=st.sampled_from([200, 429, 503]))
def test_quota_observer(fields: list[tuple[str, str]], status: int) -> None:
    observation = observe(fields, status=status, now=NOW)
    for policy in observation.policies:
        assert 0 < policy.quota <= 1e9
        for value in (policy.window, policy.remaining, policy.reset):
            assert value is None or (math.isfinite(value) and value >= 0)


toml_keys = st.sampled_from(
    ["tier", "rate", "burst", "server_counting", "backend", "namespace", "max_wait", "bogus", "tiers", "retry"]
)
toml_values = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    st.text(max_size=30).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(['"free"', '"paid"', '"memory://"', '"50/minute"', "[1, 2]", '{ free = "10/s" }']),
)


@FUZZ
@given(
    lines=st.lists(st.tuples(toml_keys, toml_values), max_size=6),
    retry=st.lists(
        st.tuples(st.sampled_from(["backoff_base", "throttle_attempts", "retry_unsafe", "nope"]), toml_values),
        max_size=3,
    ),
    garbage=st.text(max_size=40),
)
def test_config_file_parser(lines: list[tuple[str, str]], retry: list[tuple[str, str]], garbage: str) -> None:
    body = "\n".join(f"{key} = {value}" for key, value in dict(lines).items())
    if retry:
        body += "\n[retry]\n" + "\n".join(f"{key} = {value}" for key, value in dict(retry).items())
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "config.toml"
        path.write_text(body + ("\n" + garbage if garbage.startswith("#") else ""), encoding="utf-8")
        try:
            loaded = load_settings(config_file=path, environ={})
        except ConfigError as error:
            assert error.field
            return
    assert loaded.quota.requests > 0


@FUZZ
@given(value=header_text, name=st.sampled_from(["Retry-After", "retry-after-ms", "X-RateLimit-Reset", "RateLimit"]))
@example(value="5", name="Retry-After")  # exactly the cap: slept once, not again for the slot
def test_no_server_value_makes_the_client_wait_beyond_the_cap(value: str, name: str) -> None:
    cap = 5.0
    # Servers send bytes; httpx decodes them as it does off the wire.
    refusal = httpx.Response(429, headers=[(name.encode(), value.encode()), (b"X-RateLimit-Remaining", b"0")])
    replies = iter([refusal, httpx.Response(200)])
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        # Time passes while the client sleeps: a frozen clock would count a slot the
        # pause already covered as a second wait after it.
        sleeps.append(seconds)
        now[0] += seconds

    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: next(replies)),
        rate="1000/second",
        ip="127.0.0.1",
        backend=MemoryBackend(clock=lambda: now[0]),
        retry=RetryPolicy(max_server_wait=cap, backoff_max=1.0, throttle_attempts=2),
    )
    transport._io.sleep = sleep
    with httpx.Client(transport=transport) as client:
        try:
            response = client.get("http://api.test/")
        except ServerWaitTooLong as error:
            assert error.wait > cap
        except RateLimited:  # pragma: no cover - two attempts always suffice here
            pytest.fail("the second attempt succeeds")
        else:
            assert response.status_code == 200
    assert all(0 <= s <= cap for s in sleeps)
