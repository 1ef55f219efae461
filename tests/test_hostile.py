"""Hostile values from a server: bounded, reported, never slept blindly, never poisoning the shared bucket."""

from __future__ import annotations

import httpx
import pytest
from _support import FakeClock

from ratelimit_client import MemoryBackend, RateLimitTransport, RetryPolicy, ServerWaitTooLong

CAP = 60.0
BACKOFF_MAX = 2.0
HUGE = "9" * 1_000_000  # a megabyte-long header value


def _transport(replies: list[httpx.Response], time: FakeClock) -> RateLimitTransport:
    queue = iter(replies)
    transport = RateLimitTransport(
        httpx.MockTransport(lambda request: next(queue)),
        rate="1000/second",
        ip="127.0.0.1",
        backend=MemoryBackend(clock=lambda: time.now),
        retry=RetryPolicy(max_server_wait=CAP, backoff_max=BACKOFF_MAX, throttle_attempts=3),
    )
    transport._io.sleep = time.sleep
    return transport


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Retry-After", "1000000"),
        ("Retry-After", "Fri, 31 Dec 9999 23:59:59 GMT"),
        ("retry-after-ms", "999999999999"),
        ("RateLimit", '"p";r=0;t=999999999999'),
        ("X-RateLimit-Reset", "99999999999999"),  # epoch milliseconds, far in the future
    ],
)
def test_an_absurd_wait_is_refused_at_once_and_reported(name: str, value: str) -> None:
    time = FakeClock(start=0.0)
    refusal = httpx.Response(429, headers={name: value, "X-RateLimit-Remaining": "0"})
    transport = _transport([refusal, httpx.Response(200)], time)
    with httpx.Client(transport=transport) as client:
        with pytest.raises(ServerWaitTooLong) as caught:
            client.get("http://api.test/upload")
        assert caught.value.wait > CAP
        assert caught.value.attempts == 1
        assert f"{caught.value.wait:.1f}" in str(caught.value)
        assert time.sleeps == []  # not one second of it was slept
        # The shared bucket was not paused by it either: the next request waits one
        # interval of the client's own pacing (999/s), no more.
        assert client.get("http://api.test/upload").status_code == 200
    assert time.sleeps == [pytest.approx(1 / 999)]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Retry-After", "-5"),
        ("Retry-After", "NaN"),
        ("Retry-After", "soon"),
        ("Retry-After", HUGE),
        ("RateLimit", HUGE),
        ("X-RateLimit-Reset", "-1"),
    ],
)
def test_unusable_values_fall_back_to_bounded_backoff(name: str, value: str) -> None:
    time = FakeClock(start=0.0)
    refusal = httpx.Response(429, headers={name: value})
    with httpx.Client(transport=_transport([refusal, httpx.Response(200)], time)) as client:
        assert client.get("http://api.test/upload").status_code == 200
    backoff = time.sleeps[0]
    assert 0 <= backoff <= BACKOFF_MAX
    # then at most one pacing interval for the retry's slot
    assert all(s <= 1 / 999 + 1e-9 for s in time.sleeps[1:])


def test_a_fractional_wait_is_honoured() -> None:
    time = FakeClock(start=0.0)
    refusal = httpx.Response(429, headers={"Retry-After": "0.25"})
    with httpx.Client(transport=_transport([refusal, httpx.Response(200)], time)) as client:
        assert client.get("http://api.test/upload").status_code == 200
    assert time.sleeps == [0.25]  # the shared pause ends exactly when the retry wakes
