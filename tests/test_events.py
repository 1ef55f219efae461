"""Status transitions, events, log lines and per-request results, through both transports."""

from __future__ import annotations

import logging
import re
import typing

import httpx
import pytest
import respx
from _modes import by_mode, mode_fixture  # noqa: F401 - fixtures: `mode` and `anyio_backend`
from _support import URL, Harness

from ratelimit_client import Event, NetworkFailure, RateLimited, RequestStats, RetryPolicy, Status

pytestmark = pytest.mark.anyio


class _Watch:
    """Records events, and the transport's status as each attempt reaches the server."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.statuses: list[Status] = []
        self.harness: Harness | None = None

    def on_event(self, event: Event) -> None:
        # A bare 429 also teaches the learner ("rate_changed"): tests/test_learning.py covers those.
        if event.kind != "rate_changed":
            self.events.append(event)

    def kinds(self) -> list[str]:
        return [event.kind for event in self.events]

    def server(self, replies: list[httpx.Response | Exception]) -> typing.Callable[[httpx.Request], httpx.Response]:
        def handle(request: httpx.Request) -> httpx.Response:
            assert self.harness is not None
            self.statuses.append(self.harness.transport.status)
            reply = replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply

        return handle


def _watch(mode: str, replies: list[httpx.Response | Exception], **options: typing.Any) -> _Watch:
    watch = _Watch()
    watch.harness = Harness(mode, watch.server(replies), on_event=watch.on_event, **options)
    return watch


async def test_network_failure_episode_then_recovered(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ratelimit_client")
    down = httpx.ConnectError("connection refused")
    watch = _watch(
        mode, [down, down, down, httpx.Response(200)], retry=RetryPolicy(backoff_base=0.001, backoff_max=0.002)
    )
    assert watch.harness is not None
    transport = watch.harness.transport
    assert transport.status is Status.OK

    response = await watch.harness.request()

    assert response.status_code == 200
    # OK at the first attempt, NETWORK_FAILURE for the retries, OK again after.
    assert watch.statuses == [Status.OK, Status.NETWORK_FAILURE, Status.NETWORK_FAILURE, Status.NETWORK_FAILURE]
    assert transport.status is Status.OK
    # One network_failure per episode, then "retrying" for each further failure.
    assert watch.kinds() == ["network_failure", "retrying", "retrying", "recovered"]
    assert [e.attempt for e in watch.events[:3]] == [1, 2, 3]
    assert all(e.reason == "ConnectError" for e in watch.events[:3])
    assert re.fullmatch(r"connection restored after \d+\.\d s", watch.events[-1].message)
    statistics = transport.statistics()
    assert (statistics.network_failures, statistics.retries, statistics.attempts) == (1, 3, 4)

    lines = [r.getMessage() for r in caplog.records if r.name == "ratelimit_client"]
    pattern = (
        r"network failure \(ConnectError\) on GET https://api\.test/v1/files, retrying in \d+\.\d s \(attempt {}/30\)"
    )
    assert re.fullmatch(pattern.format(1), lines[0])
    assert re.fullmatch(pattern.format(3), lines[2])
    assert re.fullmatch(r"connection restored after \d+\.\d s", lines[3])
    levels = [r.levelno for r in caplog.records if r.name == "ratelimit_client"]
    assert levels == [logging.WARNING, logging.INFO, logging.INFO, logging.INFO]


async def test_a_second_outage_is_a_second_episode(mode: str) -> None:
    down = httpx.ConnectError("down")
    watch = _watch(mode, [down, httpx.Response(200), down, httpx.Response(200)])
    assert watch.harness is not None
    await watch.harness.request()
    await watch.harness.request()
    assert watch.kinds() == ["network_failure", "recovered", "network_failure", "recovered"]
    assert watch.harness.transport.statistics().network_failures == 2


async def test_throttled_status_and_events(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_client")
    slow = httpx.Response(429, headers={"Retry-After": "4.2"})
    watch = _watch(mode, [slow, slow, httpx.Response(200)])
    assert watch.harness is not None

    response = await watch.harness.request()

    assert watch.statuses == [Status.OK, Status.THROTTLED, Status.THROTTLED]
    assert watch.harness.transport.status is Status.OK
    assert watch.kinds() == ["throttled", "throttled"]
    assert [e.wait for e in watch.events] == [4.2, 4.2]
    throttling = [r.getMessage() for r in caplog.records if not r.getMessage().startswith("learned rate")]
    assert throttling[0] == (
        "throttled (429) on GET https://api.test/v1/files, retrying in 4.2 s (server; attempt 1/4)"
    )
    stats = response.extensions["ratelimit_client"]
    assert isinstance(stats, RequestStats)
    assert stats.attempts == 3
    assert stats.retry_wait == pytest.approx(8.4)


async def test_gave_up_events(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ratelimit_client")
    watch = _watch(mode, [httpx.Response(429)] * 4 + [httpx.ConnectError("down")] * 4)
    assert watch.harness is not None

    with pytest.raises(RateLimited):
        await watch.harness.request()
    with pytest.raises(NetworkFailure):
        await watch.harness.request()

    gave_up = [e for e in watch.events if e.kind == "gave_up"]
    assert len(gave_up) == 2
    assert gave_up[0].attempt == 4
    assert "still throttled (429) after 4 attempt(s)" in gave_up[0].message
    assert "ConnectError after 4 attempt(s)" in gave_up[1].message
    assert [r.levelno for r in caplog.records if "gave" not in r.getMessage() and "after 4" in r.getMessage()] == [
        logging.WARNING,
        logging.WARNING,
    ]
    assert watch.harness.transport.statistics().gave_up == 2
    assert watch.harness.transport.status is Status.NETWORK_FAILURE  # still down when it gave up


async def test_a_broken_hook_does_not_break_the_request(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    def hook(event: Event) -> None:
        calls.append(event.kind)
        raise RuntimeError("the dashboard is down")

    router = respx.Router()
    router.get(URL).mock(side_effect=[httpx.ConnectError("down"), httpx.Response(200)])
    harness = Harness(mode, router.handler, on_event=hook)

    response = await harness.request()

    assert response.status_code == 200
    assert calls == ["network_failure", "recovered"]
    broken = [r for r in caplog.records if r.getMessage() == "on_event hook raised"]
    assert len(broken) == 2
    assert broken[0].exc_info is not None
    assert isinstance(broken[0].exc_info[1], RuntimeError)
