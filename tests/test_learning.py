"""The transport learns the server's real limit, and shares it through the backend."""

from __future__ import annotations

import typing

import httpx
import pytest
from _support import FakeClock

from ratelimit_client import (
    AsyncRateLimitTransport,
    Event,
    MemoryBackend,
    RateLimited,
    RateLimitTransport,
    RetryPolicy,
    _engine,
)
from ratelimit_client._engine import _has_rate_fields

URL = "http://api.test/upload"
AUTH = {"Authorization": "Bearer key-one"}


def _transport(
    replies: httpx.MockTransport,
    time: FakeClock,
    backend: MemoryBackend,
    events: list[Event] | None = None,
    **options: object,
) -> RateLimitTransport:
    transport = RateLimitTransport(
        replies,
        ip="127.0.0.1",
        backend=backend,
        on_event=None if events is None else events.append,
        **options,  # type: ignore[arg-type]
    )
    transport._io.sleep = time.sleep
    return transport


def _server(headers: dict[str, str], status: int = 200) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, headers=headers))


def test_an_advertised_lower_quota_is_learned_and_paces_the_next_requests() -> None:
    time = FakeClock(start=0.0)
    events: list[Event] = []
    backend = MemoryBackend(clock=lambda: time.now)
    # Told "paid" (200/minute), the server says 50/minute.
    server = _server({"RateLimit-Policy": '"default";q=50;w=60', "RateLimit": '"default";r=45;t=50'})
    transport = _transport(server, time, backend, events, tier="paid")
    with httpx.Client(transport=transport) as client:
        for _ in range(4):
            client.get(URL, headers=AUTH)
    learned = [e for e in events if e.kind == "rate_changed"]
    assert len(learned) == 1  # learned once, not rewritten on every response
    assert "server advertises 50 per 60 s" in learned[0].message
    stats = transport.statistics()
    assert stats.configured_rate == pytest.approx(199 / 60)
    assert stats.learned_rate == pytest.approx(49 / 60)
    # The first request went at once; the second waited out the interval the first was
    # charged at (the paid pace); from then on each is charged, and waits, at the learned pace.
    assert time.sleeps[1:] == [pytest.approx(60 / 49), pytest.approx(60 / 49)]


def test_a_fleet_sharing_a_backend_moves_together() -> None:
    time = FakeClock(start=0.0)
    backend = MemoryBackend(clock=lambda: time.now)
    teacher = _transport(_server({"X-RateLimit-Limit": "50, 50;w=60"}), time, backend, tier="paid")
    pupil = _transport(_server({}), time, backend, tier="paid")
    with httpx.Client(transport=teacher) as client:
        client.get(URL, headers=AUTH)
    assert teacher.statistics().learned_rate == pytest.approx(49 / 60)
    with httpx.Client(transport=pupil) as client:
        for _ in range(4):
            client.get(URL, headers=AUTH)
    # The pupil never saw a header: its first reservation brought the fleet's value back,
    # and each later request is charged at it (each waits what the one before was charged).
    assert time.sleeps[-2:] == [pytest.approx(60 / 49), pytest.approx(60 / 49)]


def test_a_bare_429_cuts_the_rate_once_and_it_climbs_back() -> None:
    time = FakeClock(start=0.0)
    events: list[Event] = []
    backend = MemoryBackend(clock=lambda: time.now)
    replies = iter([httpx.Response(429), httpx.Response(429), httpx.Response(200), httpx.Response(200)])
    transport = _transport(httpx.MockTransport(lambda request: next(replies)), time, backend, events, rate="60/second")
    with httpx.Client(transport=transport) as client:
        client.get(URL, headers=AUTH)
        client.get(URL, headers=AUTH)
    cuts = [e for e in events if e.kind == "rate_changed"]
    assert 1 <= len(cuts) <= 2  # one per burst: the second 429 came after the cooldown only if backoff was long
    assert all("cut by 0.7x" in e.message for e in cuts)
    learned = transport.statistics().learned_rate
    assert learned is not None
    assert learned <= 59 * 0.7 + 1e-9


@pytest.mark.parametrize(
    ("mode", "status", "headers"), [("off", 200, {"RateLimit-Policy": "10;w=60"}), ("headers", 429, {})]
)
def test_adaptive_off_learns_nothing_and_headers_mode_ignores_bare_429s(
    mode: str, status: int, headers: dict[str, str]
) -> None:
    time = FakeClock(start=0.0)
    events: list[Event] = []
    backend = MemoryBackend(clock=lambda: time.now)
    transport = _transport(_server(headers, status), time, backend, events, tier="paid", adaptive=mode)
    with httpx.Client(transport=transport) as client:
        response = client.get(URL, headers=AUTH) if status == 200 else None
        if response is None:
            with pytest.raises(RateLimited):
                client.get(URL, headers=AUTH)
    assert [e for e in events if e.kind == "rate_changed"] == []
    assert transport.statistics().learned_rate is None


def test_auto_tier_discovers_a_higher_quota() -> None:
    time = FakeClock(start=0.0)
    server = _server({"RateLimit-Policy": '"p";q=200;w=60'})
    transport = _transport(server, time, MemoryBackend(clock=lambda: time.now), tier="auto")
    with httpx.Client(transport=transport) as client:
        client.get(URL, headers=AUTH)
    assert transport.statistics().configured_rate == pytest.approx(49 / 60)
    assert transport.statistics().learned_rate == pytest.approx(199 / 60)
    # ...while a tier given explicitly is a ceiling.
    capped = _transport(server, time, MemoryBackend(clock=lambda: time.now), tier="free")
    with httpx.Client(transport=capped) as client:
        client.get(URL, headers=AUTH)
    assert capped.statistics().learned_rate is None


def test_malformed_fields_are_counted_not_trusted() -> None:
    time = FakeClock(start=0.0)
    server = _server({"RateLimit-Policy": '"p";q=-3;w=60', "X-RateLimit-Limit": "lots"})
    transport = _transport(server, time, MemoryBackend(clock=lambda: time.now), tier="paid")
    with httpx.Client(transport=transport) as client:
        client.get(URL, headers=AUTH)
    stats = transport.statistics()
    assert stats.ignored_headers == 2
    assert stats.learned_rate is None


def test_reset_format_per_host() -> None:
    time = FakeClock(start=0.0)
    # "100" read as a delta: 50 left for 100 s. Declared an epoch, it is long past: nothing to spread.
    headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "50", "X-RateLimit-Reset": "100"}
    as_delta = _transport(_server(headers), time, MemoryBackend(clock=lambda: time.now), tier="paid")
    with httpx.Client(transport=as_delta) as client:
        client.get(URL, headers=AUTH)
    assert as_delta.statistics().learned_rate == pytest.approx(50 / 100)
    as_epoch = _transport(
        _server(headers), time, MemoryBackend(clock=lambda: time.now), tier="paid", reset_formats={"api.test": "epoch"}
    )
    with httpx.Client(transport=as_epoch) as client:
        client.get(URL, headers=AUTH)
    assert as_epoch.statistics().learned_rate is None


def _pair(
    time: FakeClock, mode: str
) -> tuple[RateLimitTransport, list[tuple[str, float, int]], typing.Callable[[], None]]:
    """A teacher drawing one 429 that pauses 5 s, and a way to make it send that request.

    The teacher does not retry, so its request (a 429, the pause, giving up) lands inside
    whatever sleep calls it. ``sent`` records (who, when, status) at the server.
    """
    backend = MemoryBackend(clock=lambda: time.now)
    sent: list[tuple[str, float, int]] = []

    def teacher_server(request: httpx.Request) -> httpx.Response:
        sent.append(("teacher", time.now, 429))
        return httpx.Response(429, headers={"Retry-After": "5"})

    once = RetryPolicy(throttle_attempts=1)
    teacher = _transport(httpx.MockTransport(teacher_server), time, backend, rate="1/second", adaptive=mode, retry=once)
    teacher._io.sleep = lambda seconds: None  # its slot (t=2, after the pupil's) comes at once
    teacher._shared.engine.learner._clock = time  # learned times on the fake clock

    def pupil_server(request: httpx.Request) -> httpx.Response:
        sent.append(("pupil", time.now, 200))
        return httpx.Response(200)

    pupil = _transport(httpx.MockTransport(pupil_server), time, backend, rate="1/second", adaptive=mode)
    pupil._shared.engine.learner._clock = time

    def teach() -> None:
        time.on_sleep = None  # once
        with httpx.Client(transport=teacher) as client, pytest.raises(RateLimited):
            client.get(URL, headers=AUTH)

    return pupil, sent, teach


@pytest.mark.parametrize("mode", ["full", "headers"])
def test_a_slot_reserved_before_another_process_429_queues_behind_its_pause(mode: str) -> None:
    time = FakeClock(start=0.0)
    pupil, sent, teach = _pair(time, mode)
    with httpx.Client(transport=pupil) as client:
        client.get(URL, headers=AUTH)  # t=0: at once
        time.on_sleep = lambda seconds: teach()  # the 429 comes while the next slot is awaited
        client.get(URL, headers=AUTH)  # waits for its slot, and would wake inside the 5 s pause told at t=0
    assert [(who, status) for who, _, status in sent] == [("pupil", 200), ("teacher", 429), ("pupil", 200)]
    # The pupil did not go at t=1 into the pause told at t=0 (till t=5): it queued again,
    # behind it, seeing the pause only through the shared backend.
    assert sent[-1][1] >= 5.0
    assert len(time.sleeps) == 2
    assert time.sleeps[0] < 5.0  # the first wake was inside the pause


def test_a_waker_whose_wall_clock_lags_queues_behind_the_pause_once() -> None:
    # paused_until is in the teacher's wall clock. A pupil whose clock is 30 s behind still
    # sees the pause in force after queueing behind it: it must go then, not queue again
    # (taking a slot each time) until its own clock catches up 30 s later.
    time = FakeClock(start=0.0)
    pupil, sent, teach = _pair(time, "full")
    pupil._shared.engine.learner._clock = lambda: time.now - 30.0
    with httpx.Client(transport=pupil) as client:
        client.get(URL, headers=AUTH)
        time.on_sleep = lambda seconds: teach()
        client.get(URL, headers=AUTH)
    assert [(who, status) for who, _, status in sent] == [("pupil", 200), ("teacher", 429), ("pupil", 200)]
    assert 5.0 <= sent[-1][1] < 7.0  # behind the pause, and no later than the next slots
    assert len(time.sleeps) == 2  # the wait for the slot, and one wait behind the pause


def test_without_learning_the_waking_slot_goes_into_the_pause() -> None:
    # The counterpart: no learned record, no extra read, and the slot goes as reserved.
    time = FakeClock(start=0.0)
    pupil, sent, teach = _pair(time, "off")
    with httpx.Client(transport=pupil) as client:
        client.get(URL, headers=AUTH)
        time.on_sleep = lambda seconds: teach()
        client.get(URL, headers=AUTH)
    assert sent[-1][0] == "pupil"
    assert sent[-1][1] == pytest.approx(time.sleeps[0])
    assert sent[-1][1] < 5.0  # into the pause


@pytest.mark.anyio
async def test_an_async_waker_also_queues_behind_another_process_pause() -> None:
    time = FakeClock(start=0.0)
    pupil_sync, sent, teach = _pair(time, "full")

    def pupil_server(request: httpx.Request) -> httpx.Response:
        sent.append(("pupil", time.now, 200))
        return httpx.Response(200)

    pupil = AsyncRateLimitTransport(
        httpx.MockTransport(pupil_server),
        ip="127.0.0.1",
        backend=pupil_sync._shared.backend,
        rate="1/second",
    )
    pupil._io.sleep = time.asleep
    pupil._shared.engine.learner._clock = time
    async with httpx.AsyncClient(transport=pupil) as client:
        await client.get(URL, headers=AUTH)
        time.on_sleep = lambda seconds: teach()
        await client.get(URL, headers=AUTH)
    assert [who for who, _, _ in sent] == ["pupil", "teacher", "pupil"]
    assert sent[-1][1] >= 5.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Content-Type", "text/plain"), ("Server", "uvicorn")], False),
        ([("Content-Type", "text/plain"), ("X-RateLimit-Remaining", "3")], True),
        ([("RATELIMIT", '"default";r=0;t=30')], True),
        ([("ratelimit-policy", "100;w=60")], True),
        ([("X-Note", "ratelimit reached")], False),  # in a value only: not a rate field
        ([], False),
    ],
)
@pytest.mark.parametrize("httpx_triples", [True, False], ids=["httpx-triples", "public-raw"])
def test_only_responses_with_rate_fields_go_to_the_learner(
    headers: list[tuple[str, str]], expected: bool, httpx_triples: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "_HTTPX_TRIPLES", httpx_triples)
    assert _has_rate_fields(httpx.Response(200, headers=headers)) is expected
